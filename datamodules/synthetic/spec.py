"""What the synthetic world contains: the :class:`SyntheticSpec` and the plan of every video it implies.

Everything is a pure function of the spec: :func:`plan_videos` names the videos (in UCF-Crime naming) and draws their
durations and events, :func:`build_plan` turns one of them into a render plan (its scene and anomalies), seeded by the
spec, the video's (split, label) group and its position in that group.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from copra_bench.datamodules.synthetic.events import plan_event
from copra_bench.datamodules.synthetic.scene import DOMAINS, VideoPlan, plan_scene

GENERATOR_VERSION = 1  # bump when rendering changes; part of the cache key
UCF_CRIME_CLASSES = ("Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting", "RoadAccidents",
                     "Robbery", "Shooting", "Shoplifting", "Stealing", "Vandalism")
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
