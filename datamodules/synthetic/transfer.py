"""The embedded transfer set: synthetic videos with MC questions and captions, in the real benchmarks' files.

:func:`generate_transfer_set` renders the test videos of one :class:`SyntheticSpec` per domain (each domain is a
"subset", named ``SYN_<domain>``) and writes, under ``out_dir``:

* VRU-Accident's layout: ``VRU_videos/SYN_<d>/<name>.mp4``, ``MetaData/SYN_<d>/SYN_<d>_VQA_annotation.json``
  (four categories: event type, location, lighting, event time; keys ``./VRU_videos/SYN_<d>/<name>.mp4``) and
  ``MetaData/SYN_<d>/SYN_<d>_Dense_Caption.json`` (keys without ``.mp4``, ``{"gt": caption}``);
* HIVAU-70K's layout under ``HIVAU-70k/``: ``videos/ucf-crime/videos/test/<name>.mp4``,
  ``raw_annotations/ucf_database_test.json`` (``n_frames``, ``fps``, ``label``, ``events`` and ``clips`` in seconds,
  captions and summaries) and ``instruction/merge_instruction_test_final.jsonl`` (clip captions, event and video
  judgements and descriptions, the answer key spelled ``anwser``).

So ``python -m copra_bench transfer`` runs end to end on CPU through the real readers. :func:`ensure_transfer_set`
caches it under ``$COPRA_CACHE_DIR`` (or ``~/.cache/copra_bench``) keyed by the specs and the version, written into a
temporary folder renamed into place, so an interrupted run never leaves a folder that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
from copra_bench.datamodules.synthetic.render import render_chunks
from copra_bench.datamodules.synthetic.spec import (
    SyntheticSpec,
    build_plan,
    plan_videos,
)
from copra_bench.datamodules.synthetic.transfer_text import (
    CATEGORIES,
    caption_of,
    description_of,
    judgement_of,
    mc_question,
)
from copra_bench.datamodules.synthetic.writers import write_mp4

__all__ = ["TRANSFER_VERSION", "ensure_transfer_set", "generate_transfer_set", "transfer_specs"]

TRANSFER_VERSION = 1  # bump when the files written change; part of the cache key
_COMPLETE = ".complete"


def transfer_specs(domains: tuple[str, ...] = ("A", "B", "C"), *, seed: int = 100, abnormal: int = 4,
                   normal: int = 2, frame_size: int = 64) -> list[SyntheticSpec]:
    """One test-only spec per domain (a seed apart from the training worlds: none of these videos is trained on)."""
    return [SyntheticSpec(domain=d, seed=seed, num_train_normal=0, num_train_abnormal=0, num_test_normal=normal,
                          num_test_abnormal=abnormal, frame_size=frame_size) for d in domains]


def _hivau(spec: SyntheticSpec, video, database: dict, rows: list[dict]) -> None:
    fps = spec.fps
    events = [[s / fps, e / fps] for s, e, _ in video.events]
    # one clip per event: its middle half (HIVAU clips are shorter segments inside their event)
    clips = [[[round(s + (e - s) / 4, 3), round(e - (e - s) / 4, 3)]] for s, e in events]
    kinds = [k for _, _, k in video.events]
    database[video.name] = {
        "n_frames": video.num_frames, "fps": float(fps), "label": sorted(set(kinds)) or ["Normal"],
        "events": events, "clips": clips,
        "clips_caption": [[description_of(spec.domain, k)] for k in kinds],
        "events_summary": [f"{judgement_of([ev])} {description_of(spec.domain, ev[2])}" for ev in video.events],
        "video_summary": f"{judgement_of(list(video.events))} {caption_of(spec.domain, list(video.events), fps)}",
    }
    base = "ucf-crime/{}/test/{}.mp4"
    for e, (_, _, kind) in enumerate(video.events):
        rows.append({"type": "clip", "task": "caption", "video": base.format("clips", f"{video.name}_E{e}C0"),
                     "prompt": "Describe the key moments that showcase the subjects' activities in the video.",
                     "anwser": description_of(spec.domain, kind)})
        rows.append({"type": "event", "task": "judgement", "video": base.format("events", f"{video.name}_E{e}"),
                     "prompt": "Are there any anomaly events detected in the video?",
                     "anwser": judgement_of([video.events[e]])})
        rows.append({"type": "event", "task": "description", "video": base.format("events", f"{video.name}_E{e}"),
                     "prompt": "Provide a summary of the anomaly events in the video.",
                     "anwser": description_of(spec.domain, kind)})
    rows.append({"type": "video", "task": "judgement", "video": base.format("videos", video.name),
                 "prompt": "Are there anomalies observed in the video clip?", "anwser": judgement_of(video.events)})
    rows.append({"type": "video", "task": "description", "video": base.format("videos", video.name),
                 "prompt": "Could you provide a summary of the anomaly events in this video?",
                 "anwser": caption_of(spec.domain, list(video.events), fps)})


def generate_transfer_set(out_dir: str | Path, specs: list[SyntheticSpec]) -> Path:
    """Write the transfer set of ``specs`` under ``out_dir`` (see the module docstring); returns ``out_dir``."""
    out = Path(out_dir)
    hivau = out / "HIVAU-70k"
    database: dict = {}
    rows: list[dict] = []
    for spec in specs:
        subset = f"SYN_{spec.domain}"
        vqa, captions = {}, {}
        rng = np.random.default_rng((spec.seed, 7, ord(spec.domain)))
        for video in (v for v in plan_videos(spec) if v.split == "test"):
            path = out / "VRU_videos" / subset / f"{video.name}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_mp4(path, render_chunks(build_plan(spec, video)), fps=spec.fps)
            key = f"./VRU_videos/{subset}/{video.name}"
            events = list(video.events)
            vqa[f"{key}.mp4"] = {c: mc_question(c, spec.domain, events, video.num_frames, rng) for c in CATEGORIES}
            captions[key] = {"gt": caption_of(spec.domain, events, spec.fps)}
            copy = hivau / "videos" / "ucf-crime" / "videos" / "test" / f"{video.name}_{subset}.mp4"
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
            _hivau(spec, _renamed(video, f"{video.name}_{subset}"), database, rows)
        meta = out / "MetaData" / subset
        meta.mkdir(parents=True, exist_ok=True)
        (meta / f"{subset}_VQA_annotation.json").write_text(json.dumps(vqa, indent=2))
        (meta / f"{subset}_Dense_Caption.json").write_text(json.dumps(captions, indent=2))
    (hivau / "raw_annotations").mkdir(parents=True, exist_ok=True)
    (hivau / "raw_annotations" / "ucf_database_test.json").write_text(json.dumps(database, indent=4))
    (hivau / "instruction").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"id": i, **row}) for i, row in enumerate(rows)]
    (hivau / "instruction" / "merge_instruction_test_final.jsonl").write_text("\n".join(lines) + "\n")
    (out / "synthetic_transfer_meta.json").write_text(json.dumps(
        {"version": TRANSFER_VERSION, "specs": [asdict(s) for s in specs]}, indent=1))
    (out / _COMPLETE).write_text(f"version={TRANSFER_VERSION}\n")
    return out


def _renamed(video, name: str):
    """The planned video under another name (HIVAU names must be unique over the domains)."""
    from dataclasses import replace

    return replace(video, name=name)


def ensure_transfer_set(specs: list[SyntheticSpec], *, cache_dir: str | Path | None = None) -> Path:
    """The transfer set of ``specs``, generated into the cache on first use (see the module docstring)."""
    root = Path(cache_dir or os.environ.get("COPRA_CACHE_DIR") or "~/.cache/copra_bench").expanduser()
    payload = json.dumps([TRANSFER_VERSION, [asdict(s) for s in specs]], sort_keys=True)
    final = root / "synthetic" / f"transfer-{hashlib.sha1(payload.encode()).hexdigest()[:12]}"
    if (final / _COMPLETE).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        generate_transfer_set(tmp, specs)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / _COMPLETE).is_file():  # an incomplete leftover: replace it
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
