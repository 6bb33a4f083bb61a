"""Putting window scores back together per video, checked, and saving them.

Test windows arrive in batches mixing videos, from several DataLoader workers and DDP ranks. A
:class:`WindowScoreCollector` keeps every ``(video, window) -> score`` it sees, gathers across ranks, and assembles
each video's window scores in order, refusing missing or duplicated windows and non-finite scores, then spreads
them to frames with :func:`~copra_bench.windows.window_to_frame_scores`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from copra_bench.errors import EvaluationError
from copra_bench.windows import num_windows, window_to_frame_scores


@dataclass
class VideoScores:
    """Scores of one test video."""

    name: str
    label: int
    window_scores: np.ndarray        # [num_windows]
    frame_scores: np.ndarray         # [num_frames]
    gt: np.ndarray | None            # [num_frames] uint8
    features: np.ndarray | None = None  # [num_windows, D] float16 pooled vision features
    classes: tuple[str, ...] = ()       # the video's class(es): UCF class, XD codes, ("Normal",)
    fps: float = 0.0


class WindowScoreCollector:
    """Collects per-window scores (and optionally features) of one test set."""

    def __init__(self, test_set, *, keep_features: bool = True) -> None:
        self.test_set = test_set
        self.keep_features = keep_features
        self.scores: dict[tuple[int, int], float] = {}
        self.features: dict[tuple[int, int], np.ndarray] = {}
        self.duplicates: list[tuple[int, int]] = []

    def add(self, video_index: torch.Tensor, window_index: torch.Tensor, scores: torch.Tensor,
            features: torch.Tensor | None = None) -> None:
        videos = video_index.tolist()
        windows = window_index.tolist()
        values = scores.detach().float().cpu().tolist()
        feats = features.detach().to(torch.float16).cpu().numpy() if (features is not None and self.keep_features) \
            else None
        for i, key in enumerate(zip(videos, windows)):
            if key in self.scores:
                self.duplicates.append(key)
            self.scores[key] = values[i]
            if feats is not None:
                self.features[key] = feats[i]

    def gather(self) -> None:
        """Merge the collections of all DDP ranks into every rank (no-op on one process)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        parts: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, (self.scores, self.features, self.duplicates))
        merged_scores, merged_features, duplicates = {}, {}, []
        for scores, features, dups in parts:
            duplicates += dups + [k for k in scores if k in merged_scores]
            merged_scores.update(scores)
            merged_features.update(features)
        self.scores, self.features, self.duplicates = merged_scores, merged_features, duplicates

    def assemble(self) -> list[VideoScores]:
        """Per-video scores in test-set order; raises if any window is missing, duplicated or not finite."""
        if self.duplicates:
            raise EvaluationError(f"{self.test_set.name}: {len(self.duplicates)} windows were scored twice, e.g. "
                                  f"(video, window) {self.duplicates[:3]}: the test loader read a video twice")
        stride = self.test_set.window_spec.stride
        videos, bad = [], []
        for v, record in enumerate(self.test_set.records):
            expected = num_windows(record.num_frames, stride=stride)
            missing = [w for w in range(expected) if (v, w) not in self.scores]
            if missing:
                raise EvaluationError(f"{self.test_set.name}/{record.name}: {len(missing)} of {expected} windows "
                                      f"have no score (first missing: {missing[0]})")
            window_scores = np.array([self.scores[(v, w)] for w in range(expected)], dtype=np.float64)
            if not np.isfinite(window_scores).all():
                bad.append(record.name)
            features = None
            if self.features:
                features = np.stack([self.features[(v, w)] for w in range(expected)])
            videos.append(VideoScores(name=record.name, label=record.label, window_scores=window_scores,
                                      frame_scores=window_to_frame_scores(window_scores, record.num_frames,
                                                                          stride=stride),
                                      gt=record.gt, features=features, classes=tuple(record.classes),
                                      fps=float(record.fps)))
        if bad:
            raise EvaluationError(f"{self.test_set.name}: NaN or inf scores in {len(bad)} videos: "
                                  f"{', '.join(bad[:10])}")
        return videos


def check_ground_truth(videos: list[VideoScores], *, where: str = "") -> None:
    """Every video has frame-level ground truth as long as its frame scores (never truncated): else an error naming
    the video and both lengths."""
    prefix = f"{where}/" if where else ""
    for video in videos:
        if video.gt is None:
            raise EvaluationError(f"{prefix}{video.name} has no frame-level ground truth")
        if video.gt.shape[0] != video.frame_scores.shape[0]:
            raise EvaluationError(f"{prefix}{video.name}: {video.frame_scores.shape[0]} frame scores but "
                                  f"{video.gt.shape[0]} ground-truth frames")


def concatenate(videos: list[VideoScores]) -> tuple[np.ndarray, np.ndarray]:
    """Frame scores and ground truth of all videos, concatenated in order; lengths are checked per video."""
    check_ground_truth(videos)
    return (np.concatenate([v.frame_scores for v in videos]), np.concatenate([v.gt for v in videos]))


#: Version of the scores file written by :func:`save_scores` (1: the foundation's, without classes and fps).
SCORES_FORMAT = 2
CLASS_SEPARATOR = "|"


def save_scores(path: str | Path, videos: list[VideoScores], *, extra: dict | None = None) -> Path:
    """Write per-video window scores, frame scores, ground truth, features, classes and fps to one ``.npz``.

    ``extra`` goes to ``meta/<key>``; the test loop records ``meta/stride`` there (needed to rebuild frame scores
    from post-processed window scores).
    """
    arrays: dict[str, np.ndarray] = {"videos": np.array([v.name for v in videos]),
                                     "labels": np.array([v.label for v in videos], dtype=np.int64),
                                     "classes": np.array([CLASS_SEPARATOR.join(v.classes) for v in videos]),
                                     "fps": np.array([v.fps for v in videos], dtype=np.float64),
                                     "meta/format": np.asarray(SCORES_FORMAT)}
    for v in videos:
        arrays[f"{v.name}/window_scores"] = v.window_scores
        arrays[f"{v.name}/frame_scores"] = v.frame_scores.astype(np.float32)
        if v.gt is not None:
            arrays[f"{v.name}/gt"] = v.gt
        if v.features is not None:
            arrays[f"{v.name}/features"] = v.features
    for key, value in (extra or {}).items():
        arrays[f"meta/{key}"] = np.asarray(value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def load_scores(path: str | Path) -> list[VideoScores]:
    """Read back what :func:`save_scores` wrote (format 1 files have no classes or fps: left empty)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise EvaluationError(f"{path}: not a readable scores file ({err})") from None
    with data:
        keys = set(data.files)
        if "videos" not in keys or "labels" not in keys:
            raise EvaluationError(f"{path}: not a copra_bench scores file (no 'videos'/'labels' arrays)")
        names = data["videos"].tolist()
        classes = data["classes"].tolist() if "classes" in keys else [""] * len(names)
        fps = data["fps"].tolist() if "fps" in keys else [0.0] * len(names)
        out = []
        for name, label, cls, rate in zip(names, data["labels"].tolist(), classes, fps, strict=True):
            missing = [k for k in ("window_scores", "frame_scores") if f"{name}/{k}" not in keys]
            if missing:
                raise EvaluationError(f"{path}: video {name} lacks {', '.join(missing)}")
            out.append(VideoScores(
                name=name, label=int(label), window_scores=data[f"{name}/window_scores"],
                frame_scores=data[f"{name}/frame_scores"].astype(np.float64),
                gt=data[f"{name}/gt"] if f"{name}/gt" in keys else None,
                features=data[f"{name}/features"] if f"{name}/features" in keys else None,
                classes=tuple(c for c in cls.split(CLASS_SEPARATOR) if c), fps=float(rate)))
    return out


def load_meta(path: str | Path) -> dict[str, np.ndarray]:
    """The ``meta/*`` entries of a scores file (``stride``, ``format``...), without the prefix."""
    with np.load(path, allow_pickle=False) as data:
        return {k[len("meta/"):]: data[k] for k in data.files if k.startswith("meta/")}
