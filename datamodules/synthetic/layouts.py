"""The synthetic world written in the real release layouts: UCF-Crime, XD-Violence and ShanghaiTech (weakly supervised).

Every layout holds the same videos of a spec (:func:`~copra_bench.datamodules.synthetic.spec.plan_videos`), named and
filed the way each release does, with its own annotation format, so every real reader is tested end to end:

* ``ucf_crime``: ``Anomaly-Videos-Part-1/<Class>/<Class>NNN_x264.mp4``, normal videos in
  ``Training_Normal_Videos_Anomaly/`` and ``Testing_Normal_Videos_Anomaly/``, the split lists in
  ``Anomaly_Detection_splits/`` and ``Temporal_Anomaly_Annotation_for_Testing_Videos.txt`` (see
  :func:`generate_ucf_crime`).
* ``xd_violence``: ``train/<name>.mp4``, ``test/<name>.mp4`` with XD names carrying label codes
  (``Synth.Fighting.001__#00-00-00_label_B1-0-0``, normal ``..._label_A``) and ``annotations.txt``
  (``name s1 e1 [s2 e2]``, end exclusive; every other name carries ``.mp4``, like 14 names of the real file).
* ``shanghaitech``: abnormal videos are test-part videos ``01_NNNN`` (``testing/frames/<name>/000.jpg ...`` plus
  ``testing/test_frame_mask/<name>.npy``), normal videos training-part videos ``01_NNN``
  (``training/videos/<name>.avi``, or ``training/frames/<name>/`` with ``frames``), and ``SH_Train.txt`` /
  ``SH_Test.txt``, as in Zhong et al.'s split of the real release.

Each generator writes ``synthetic_meta.json`` (the spec, the domain style and every video with its events) and, last,
the ``.complete`` marker, and is registered in :data:`LAYOUTS` under its layout name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from copra_bench.datamodules.synthetic.render import render_chunks
from copra_bench.datamodules.synthetic.scene import DOMAINS
from copra_bench.datamodules.synthetic.spec import (
    GENERATOR_VERSION, SyntheticSpec, SyntheticVideo, build_plan, plan_videos,
)
from copra_bench.datamodules.synthetic.writers import write_frames, write_video

COMPLETE_MARKER = ".complete"
META_FILE = "synthetic_meta.json"
#: Synthetic anomaly kind -> XD-Violence label code (B1 fighting, B4 riot, B5 abuse, B6 car accident, G explosion).
XD_CODE_OF = {"Fighting": "B1", "Explosion": "G", "Arson": "G", "RoadAccidents": "B6", "Robbery": "B5",
              "Vandalism": "B4"}


def _start(out_dir: str | Path) -> Path:
    """Create ``out_dir`` and drop a stale ``.complete`` marker: the folder is incomplete until :func:`_finish`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / COMPLETE_MARKER).unlink(missing_ok=True)
    return out


def _finish(out: Path, layout: str, spec: SyntheticSpec, frames: bool, videos: list[dict]) -> Path:
    """Write ``synthetic_meta.json`` and, last, the ``.complete`` marker; returns ``out``."""
    meta = {"layout": layout, "frames": frames, "spec": asdict(spec), "generator_version": GENERATOR_VERSION,
            "event_convention": "end_exclusive", "domain_style": asdict(DOMAINS[spec.domain]), "videos": videos}
    (out / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    (out / COMPLETE_MARKER).write_text(f"generator_version={GENERATOR_VERSION}\n")
    return out


def generate_ucf_crime(out_dir: str | Path, spec: SyntheticSpec, *, progress: bool = True,
                       frames: bool = False) -> Path:
    """Write the spec's videos in the UCF-Crime release layout under ``out_dir``.

    Writes ``Anomaly-Videos-Part-1/<Class>/<Class>NNN_x264.mp4``, ``Training_Normal_Videos_Anomaly/
    Normal_VideosNNN_x264.mp4``, ``Testing_Normal_Videos_Anomaly/Normal_Videos_NNN_x264.mp4``, the split lists in
    ``Anomaly_Detection_splits/``, ``Temporal_Anomaly_Annotation_for_Testing_Videos.txt`` (test videos only, events
    as ``start end_exclusive``, -1 padding), ``synthetic_meta.json`` and, last, the ``.complete`` marker.

    Args:
        out_dir: output folder (created; existing files of the same names are overwritten).
        spec: what to synthesise.
        progress: show a tqdm bar over the videos.
        frames: write each video as a frame folder ``<relpath without .mp4>/000001.jpg ...`` instead of a file.

    Returns:
        ``out_dir`` as a Path.
    """
    out = _start(out_dir)
    videos = plan_videos(spec)
    bar = tqdm(videos, desc=f"synthesising UCF-Crime layout, domain {spec.domain}", unit="video",
               disable=not progress)
    for video in bar:
        path = out / video.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        written = write_video(path, render_chunks(build_plan(spec, video)), fps=spec.fps, frames=frames)
        assert written == video.num_frames, (video.name, written)

    def order(v: SyntheticVideo) -> tuple:  # abnormal classes grouped (alphabetically), then normals, like the release
        return (1 - v.label, v.cls if v.label else "", v.number)

    splits = out / "Anomaly_Detection_splits"
    splits.mkdir(exist_ok=True)
    for split, fname in (("train", "Anomaly_Train.txt"), ("test", "Anomaly_Test.txt")):
        rows = sorted((v for v in videos if v.split == split), key=order)
        (splits / fname).write_text("".join(v.relpath.removeprefix("Anomaly-Videos-Part-1/") + "\n" for v in rows))
    lines = []
    for v in sorted((v for v in videos if v.split == "test"), key=order):
        bounds = [x for s, e, _ in v.events for x in (s, e)] + [-1] * (4 - 2 * len(v.events))
        lines.append("  ".join([f"{v.name}.mp4", v.cls, *map(str, bounds)]) + "\n")
    (out / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt").write_text("".join(lines))
    metas = [{**v.meta(spec.fps), "relpath": str(Path(v.relpath).with_suffix("")) if frames else v.relpath}
             for v in videos]
    return _finish(out, "ucf_crime", spec, frames, metas)


def xd_name(video: SyntheticVideo) -> str:
    """The XD-Violence style name of a planned video (label codes in the name)."""
    if video.label:
        return f"Synth.{video.cls}.{video.number:03d}__#00-00-00_label_{XD_CODE_OF[video.cls]}-0-0"
    return f"Synth.Normal.{video.number:03d}__#{video.split}_label_A"


def generate_xd_violence(out_dir: str | Path, spec: SyntheticSpec, *, progress: bool = True,
                         frames: bool = False) -> Path:
    """Write the spec's videos in the XD-Violence release layout under ``out_dir`` (see the module docstring)."""
    out = _start(out_dir)
    planned = plan_videos(spec)
    metas, lines = [], []
    for video in tqdm(planned, desc=f"synthesising XD-Violence layout, domain {spec.domain}", unit="video",
                      disable=not progress):
        name = xd_name(video)
        relpath = f"{video.split}/{name}.mp4"
        written = write_video(out / relpath, render_chunks(build_plan(spec, video)), fps=spec.fps, frames=frames)
        assert written == video.num_frames, (name, written)
        metas.append({**video.meta(spec.fps), "name": name, "relpath": relpath[:-4] if frames else relpath,
                      "codes": [XD_CODE_OF[video.cls]] if video.label else ["A"]})
        if video.split == "test" and video.label:
            suffix = ".mp4" if len(lines) % 2 else ""
            lines.append(" ".join([name + suffix, *(str(x) for s, e, _ in video.events for x in (s, e))]) + "\n")
    (out / "annotations.txt").write_text("".join(lines))
    return _finish(out, "xd_violence", spec, frames, metas)


def sh_names(planned: list[SyntheticVideo]) -> dict[int, str]:
    """ShanghaiTech names by position in ``planned``: abnormal -> test part ``01_NNNN``, normal -> ``01_NNN``."""
    names, abnormal, normal = {}, 0, 0
    for i, video in enumerate(planned):
        if video.label:
            abnormal += 1
            names[i] = f"01_{abnormal:04d}"
        else:
            normal += 1
            names[i] = f"01_{normal:03d}"
    return names


def generate_shanghaitech(out_dir: str | Path, spec: SyntheticSpec, *, progress: bool = True,
                          frames: bool = False) -> Path:
    """Write the spec's videos in the ShanghaiTech layout with Zhong et al.'s split files (module docstring)."""
    out = _start(out_dir)
    planned = plan_videos(spec)
    names = sh_names(planned)
    metas, split_lists = [], {"train": [], "test": []}
    masks = out / "testing" / "test_frame_mask"
    masks.mkdir(parents=True, exist_ok=True)
    for i, video in enumerate(tqdm(planned, desc=f"synthesising ShanghaiTech layout, domain {spec.domain}",
                                   unit="video", disable=not progress)):
        name = names[i]
        chunks = render_chunks(build_plan(spec, video))
        if video.label:
            relpath = f"testing/frames/{name}"
            written = write_frames(out / relpath, chunks, pattern="{:03d}.jpg", first=0)
            mask = np.zeros(video.num_frames, np.uint8)
            for start, end, _ in video.events:
                mask[start:end] = 1
            np.save(masks / f"{name}.npy", mask)
        elif frames:
            relpath = f"training/frames/{name}"
            written = write_frames(out / relpath, chunks, pattern="{:03d}.jpg", first=0)
        else:
            relpath = f"training/videos/{name}.avi"
            (out / relpath).parent.mkdir(parents=True, exist_ok=True)
            written = write_video(out / relpath, chunks, fps=spec.fps, frames=False)
        assert written == video.num_frames, (name, written)
        split_lists[video.split].append(name)
        metas.append({**video.meta(spec.fps), "name": name, "relpath": relpath})
    (out / "SH_Train.txt").write_text("".join(f"{n}\n" for n in split_lists["train"]))
    (out / "SH_Test.txt").write_text("".join(f"{n}\n" for n in split_lists["test"]))
    return _finish(out, "shanghaitech", spec, frames, metas)


#: Layout name -> generator ``(out_dir, spec, *, progress=True, frames=False) -> out_dir``.
LAYOUTS: dict[str, Callable[..., Path]] = {"ucf_crime": generate_ucf_crime, "xd_violence": generate_xd_violence,
                                           "shanghaitech": generate_shanghaitech}


def layout_generator(layout: str) -> Callable[..., Path]:
    """The generator of ``layout``; a ``ValueError`` naming the known layouts for any other name."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown synthetic layout {layout!r}; known layouts: {', '.join(sorted(LAYOUTS))}")
    return LAYOUTS[layout]
