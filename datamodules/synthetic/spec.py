"""Deterministic synthetic surveillance world written in the real release layouts (default embedded dataset).

Tiny procedurally rendered videos (see :mod:`copra_bench.datamodules.synthetic_render`) with normal walkers and
frame-exact anomalies, written losslessly (``libx264rgb``, crf 0) as ``.mp4`` so that the real dataset readers read
them exactly like the real release. Everything is a pure function of the :class:`SyntheticSpec`: the same spec gives
identical decoded frames. ``ensure_synthetic`` caches the result under ``$COPRA_CACHE_DIR`` (or
``~/.cache/copra_bench``), keyed by the spec, the layout and :data:`GENERATOR_VERSION`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import av
import numpy as np
from tqdm.auto import tqdm

from .synthetic_render import DOMAINS, DomainStyle, VideoPlan, plan_event, plan_scene, render_chunks

__all__ = [
    "DOMAINS", "GENERATOR_VERSION", "LAYOUTS", "UCF_CRIME_CLASSES", "DomainStyle", "SyntheticSpec", "SyntheticVideo",
    "build_plan", "cache_path", "ensure_synthetic", "generate_ucf_crime", "main_synth", "plan_videos", "write_frames",
    "write_mp4",
]

GENERATOR_VERSION = 1  # bump when rendering changes; part of the cache key
UCF_CRIME_CLASSES = ("Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting", "RoadAccidents",
                     "Robbery", "Shooting", "Shoplifting", "Stealing", "Vandalism")
COMPLETE_MARKER = ".complete"
META_FILE = "synthetic_meta.json"
# (split, label) -> seeding group; adding videos of one group never changes the videos of another
_GROUPS = {("train", 1): 0, ("train", 0): 1, ("test", 1): 2, ("test", 0): 3}


@dataclass(frozen=True)
class SyntheticSpec:
    """What to synthesise. Every video is a deterministic function of this spec and its position in the split.

    Attributes:
        domain: a key of :data:`DOMAINS` (camera look and anomaly kinds).
        seed: non-negative base seed.
        num_train_normal: normal training videos.
        num_train_abnormal: abnormal training videos (video-level label only, like the real release).
        num_test_normal: normal test videos.
        num_test_abnormal: abnormal test videos (temporally annotated).
        fps: frames per second.
        min_seconds: shortest video duration; durations are uniform in ``[min_seconds, max_seconds]``.
        max_seconds: longest video duration.
        frame_size: height = width of the frames in pixels (even, >= 16).
    """

    domain: str = "A"
    seed: int = 0
    num_train_normal: int = 8
    num_train_abnormal: int = 8
    num_test_normal: int = 6
    num_test_abnormal: int = 6
    fps: int = 16
    min_seconds: float = 12.0
    max_seconds: float = 24.0
    frame_size: int = 64

    def __post_init__(self) -> None:
        for f in fields(self):  # normalise types (3 -> 3.0, numpy ints -> int) so equal specs share a cache key
            if f.name != "domain":
                value = type(f.default)(getattr(self, f.name))
                if value != getattr(self, f.name):
                    raise ValueError(f"{f.name} must be a {type(f.default).__name__}, got {getattr(self, f.name)!r}")
                object.__setattr__(self, f.name, value)
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown synthetic domain {self.domain!r}; known domains: {', '.join(sorted(DOMAINS))}")
        counts = (self.num_train_normal, self.num_train_abnormal, self.num_test_normal, self.num_test_abnormal)
        if self.seed < 0 or min(counts) < 0:
            raise ValueError("seed and video counts must be non-negative")
        if self.fps < 1 or self.frame_size < 16 or self.frame_size % 2:
            raise ValueError(f"need fps >= 1 and an even frame_size >= 16, got fps={self.fps}, "
                             f"frame_size={self.frame_size}")
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(f"need 0 < min_seconds <= max_seconds, got {self.min_seconds}, {self.max_seconds}")
        if round(self.min_seconds * self.fps) < round(2 * self.fps) + 2:
            raise ValueError(f"min_seconds={self.min_seconds} is too short for a 2 s event plus a normal frame on "
                             f"each side at {self.fps} fps")


@dataclass(frozen=True)
class SyntheticVideo:
    """One planned video: its name in the layout, split, label, class and events ``(start, end_exclusive, kind)``."""

    name: str
    relpath: str
    split: str
    label: int
    cls: str
    number: int
    index: int  # position in its (split, label) group; with the group, the seed of the video
    num_frames: int
    events: tuple[tuple[int, int, str], ...]

    def meta(self, fps: int) -> dict:
        return {"name": self.name, "relpath": self.relpath, "split": self.split, "label": self.label,
                "class": self.cls, "num_frames": self.num_frames, "fps": fps,
                "events": [list(e) for e in self.events]}


def _key(spec: SyntheticSpec, split: str, label: int, index: int, stream: int, sub: int = 0) -> tuple[int, ...]:
    # fixed length on purpose: numpy seeding ignores trailing zeros, so keys of different length could collide
    return (spec.seed, DOMAINS[spec.domain].index, _GROUPS[(split, label)], index, stream, sub)


def _timing(spec: SyntheticSpec, split: str, label: int, index: int, kind: str) -> tuple[int, list]:
    """Draw the frame count and, for abnormal videos, 1 or 2 non-overlapping events of 2-6 s."""
    rng = np.random.default_rng(_key(spec, split, label, index, 1))
    n = int(round(rng.uniform(spec.min_seconds, spec.max_seconds) * spec.fps))
    if not label:
        return n, []
    lo, gap = round(2 * spec.fps), spec.fps
    hi = min(round(6 * spec.fps), n - 2)
    two = rng.random() < 0.5 and n >= 2 * lo + gap + 2
    if not two:
        length = int(rng.integers(lo, hi + 1))
        start = int(rng.integers(1, n - length))
        return n, [(start, start + length, kind)]
    hi2 = min(hi, (n - gap - 2) // 2)
    l1, l2 = (int(x) for x in rng.integers(lo, hi2 + 1, size=2))
    free = n - l1 - l2 - gap - 2
    a, b = sorted(int(x) for x in rng.integers(0, free + 1, size=2))
    s1 = 1 + a
    s2 = s1 + l1 + gap + (b - a)
    return n, [(s1, s1 + l1, kind), (s2, s2 + l2, kind)]


def plan_videos(spec: SyntheticSpec) -> list[SyntheticVideo]:
    """All videos of the spec in UCF-Crime naming: train abnormal, train normal, test abnormal, test normal.

    Abnormal classes are assigned round-robin over the domain's anomaly kinds; class numbers are 1-based and unique
    per class (train first, then test). Normal numbers are shared by both splits (train first), like the release.
    """
    kinds = DOMAINS[spec.domain].anomaly_kinds
    counters: dict[str, int] = {}
    videos = []
    for split, n_abn, n_norm in (("train", spec.num_train_abnormal, spec.num_train_normal),
                                 ("test", spec.num_test_abnormal, spec.num_test_normal)):
        for label, count in ((1, n_abn), (0, n_norm)):
            for i in range(count):
                cls = kinds[i % len(kinds)] if label else "Normal"
                counters[cls] = number = counters.get(cls, 0) + 1
                if label:
                    name = f"{cls}{number:03d}_x264"
                    relpath = f"Anomaly-Videos-Part-1/{cls}/{name}.mp4"
                elif split == "train":
                    name = f"Normal_Videos{number:03d}_x264"
                    relpath = f"Training_Normal_Videos_Anomaly/{name}.mp4"
                else:
                    name = f"Normal_Videos_{number:03d}_x264"
                    relpath = f"Testing_Normal_Videos_Anomaly/{name}.mp4"
                n, events = _timing(spec, split, label, i, cls)
                videos.append(SyntheticVideo(name, relpath, split, label, cls, number, i, n, tuple(events)))
    return videos


def build_plan(spec: SyntheticSpec, video: SyntheticVideo) -> VideoPlan:
    """The render plan of ``video`` (normal scene + its events); render with ``render_chunks``/``render_video``."""
    style = DOMAINS[spec.domain]
    plan, ctx = plan_scene(style, scene_key=_key(spec, video.split, video.label, video.index, 2),
                           noise_key=_key(spec, video.split, video.label, video.index, 4)[:-1],
                           num_frames=video.num_frames, fps=spec.fps, size=spec.frame_size)
    rng = np.random.default_rng(_key(spec, video.split, video.label, video.index, 3))
    plan.events = [plan_event(ctx, kind, rng, s, e) for s, e, kind in video.events]
    return plan


def write_mp4(path: str | Path, chunks: Iterable[np.ndarray], *, fps: int) -> int:
    """Write uint8 RGB frames losslessly (libx264rgb, crf 0) to ``path``; returns the number of frames written."""
    count = 0
    with av.open(str(path), "w") as container:
        stream = None
        for chunk in chunks:
            if stream is None:
                stream = container.add_stream("libx264rgb", rate=fps, options={"crf": "0", "preset": "ultrafast"})
                stream.height, stream.width = chunk.shape[1:3]
                stream.pix_fmt = "rgb24"
            for frame in chunk:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
                count += 1
        if stream is not None:
            container.mux(stream.encode(None))
    return count


def write_frames(folder: str | Path, chunks: Iterable[np.ndarray], *, pattern: str = "{:06d}.jpg", first: int = 1,
                 quality: int = 95) -> int:
    """Write uint8 RGB frames as a frame folder (``000001.jpg ...`` by default; ShanghaiTech uses ``000.jpg ...``,
    ``pattern="{:03d}.jpg", first=0``); returns the number of frames written. JPEG is lossy, as in the real copies."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for chunk in chunks:
        for frame in chunk:
            Image.fromarray(frame).save(folder / pattern.format(first + count), quality=quality)
            count += 1
    return count


def write_video(path: Path, chunks: Iterable[np.ndarray], *, fps: int, frames: bool) -> int:
    """A video file at ``path`` or, with ``frames``, a frame folder at ``path`` without its suffix."""
    if frames:
        return write_frames(path.with_suffix(""), chunks)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_mp4(path, chunks, fps=fps)


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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / COMPLETE_MARKER).unlink(missing_ok=True)
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
    meta = {"layout": "ucf_crime", "frames": frames, "spec": asdict(spec), "generator_version": GENERATOR_VERSION,
            "event_convention": "end_exclusive", "domain_style": asdict(DOMAINS[spec.domain]),
            "videos": [{**v.meta(spec.fps), "relpath": str(Path(v.relpath).with_suffix("")) if frames else v.relpath}
                       for v in videos]}
    (out / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    (out / COMPLETE_MARKER).write_text(f"generator_version={GENERATOR_VERSION}\n")
    return out


LAYOUTS: dict[str, Callable[..., Path]] = {"ucf_crime": generate_ucf_crime}


def _layout_fn(layout: str) -> Callable[..., Path]:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown synthetic layout {layout!r}; known layouts: {', '.join(sorted(LAYOUTS))}")
    return LAYOUTS[layout]


def cache_path(spec: SyntheticSpec, *, layout: str = "ucf_crime", cache_dir: str | Path | None = None,
               frames: bool = False) -> Path:
    """Where :func:`ensure_synthetic` keeps ``spec``: ``<cache>/synthetic/<layout>[-frames]-<domain>-<12-char sha1>``.
    """
    _layout_fn(layout)
    root = Path(cache_dir or os.environ.get("COPRA_CACHE_DIR") or "~/.cache/copra_bench").expanduser()
    key: list = [layout, asdict(spec), GENERATOR_VERSION] + (["frames"] if frames else [])
    payload = json.dumps(key, sort_keys=True)
    name = f"{layout}{'-frames' if frames else ''}-{spec.domain}"
    return root / "synthetic" / f"{name}-{hashlib.sha1(payload.encode()).hexdigest()[:12]}"


def ensure_synthetic(spec: SyntheticSpec, *, layout: str = "ucf_crime", cache_dir: str | Path | None = None,
                     progress: bool = True, frames: bool = False) -> Path:
    """Return a complete synthetic dataset for ``spec``, generating it into the cache only if needed.

    A cached folder is reused (untouched) when it holds the ``.complete`` marker. Otherwise the data is generated in a
    temporary sibling folder that is renamed into place at the end, so an interrupted run never leaves a folder that
    looks complete, and of two processes racing, the loser uses the winner's folder.

    Args:
        spec: what to synthesise.
        layout: a key of :data:`LAYOUTS`.
        cache_dir: cache root; default ``$COPRA_CACHE_DIR`` or ``~/.cache/copra_bench``.
        progress: show a progress bar while generating.
        frames: write frame folders instead of video files (see the layout's generator).

    Returns:
        The dataset root folder.
    """
    generate = _layout_fn(layout)
    final = cache_path(spec, layout=layout, cache_dir=cache_dir, frames=frames)
    if (final / COMPLETE_MARKER).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
        generate(tmp, spec, progress=progress, **({"frames": True} if frames else {}))
        for _ in range(5):
            try:
                os.replace(tmp, final)  # atomic; fails if `final` exists and is not empty
                return final
            except OSError:
                if (final / COMPLETE_MARKER).is_file():
                    return final  # another process won the race: use theirs
            # an incomplete leftover not written by this function: move it aside and retry
            stale = final.with_name(f".{final.name}.stale-{os.getpid()}-{os.urandom(4).hex()}")
            try:
                os.replace(final, stale)
            except OSError:
                continue
            if (stale / COMPLETE_MARKER).is_file():  # it completed in the meantime: put it back
                try:
                    os.replace(stale, final)
                    return final
                except OSError:
                    pass
            shutil.rmtree(stale, ignore_errors=True)
        raise RuntimeError(f"could not move the generated dataset into place at {final}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main_synth(argv: list[str] | None = None) -> int:
    """CLI ``copra_bench data synth``: write a synthetic dataset to ``--out``; returns 0 on success."""
    defaults = SyntheticSpec()
    parser = argparse.ArgumentParser(prog="copra_bench data synth",
                                     description="Write the deterministic synthetic surveillance dataset in a real "
                                                 "release layout.")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--layout", default="ucf_crime", help=f"release layout (known: {', '.join(sorted(LAYOUTS))})")
    parser.add_argument("--domain", default=defaults.domain,
                        help=f"camera domain (known: {', '.join(sorted(DOMAINS))})")
    for f in fields(SyntheticSpec):
        if f.name != "domain":
            parser.add_argument("--" + f.name.replace("_", "-"), type=type(getattr(defaults, f.name)),
                                default=getattr(defaults, f.name), help=f"default: {getattr(defaults, f.name)}")
    parser.add_argument("--frames", action="store_true",
                        help="write pre-extracted frame folders (<video>/000001.jpg ...) instead of video files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        generate = _layout_fn(args.layout)
        spec = SyntheticSpec(**{f.name: getattr(args, f.name) for f in fields(SyntheticSpec)})
    except ValueError as err:
        parser.error(str(err))
    out = generate(args.out, spec, progress=not args.no_progress, **({"frames": True} if args.frames else {}))
    print(out)
    videos = json.loads((out / META_FILE).read_text())["videos"]
    n_abn = sum(v["label"] for v in videos)
    print(f"{len(videos)} videos ({n_abn} abnormal, {len(videos) - n_abn} normal), "
          f"{sum(v['num_frames'] for v in videos)} frames at {spec.fps} fps, "
          f"{spec.frame_size}x{spec.frame_size}, {args.layout} layout{' (frame folders)' if args.frames else ''}, domain {spec.domain}")
    return 0


from copra_bench.datamodules import synthetic_layouts  # noqa: E402,F401  registers the other layouts in LAYOUTS
