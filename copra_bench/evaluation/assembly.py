"""Putting window scores back together per video, checked, and saving them.

Test windows arrive in batches mixing videos, from several DataLoader workers and DDP ranks. A
:class:`WindowScoreCollector` (a torchmetrics ``Metric``) keeps every ``(video, window) -> score`` it sees, gathers
them to rank 0 (:meth:`WindowScoreCollector.gathered`), and assembles each video's window scores in order, refusing missing or duplicated windows and non-finite scores, then spreads
them to frames with :func:`~copra_bench.windows.window_to_frame_scores`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from copra_bench.errors import EvaluationError
from copra_bench.evaluation.ranks import gather_to_zero
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


class WindowScoreCollector(Metric):
    """Collects per-window scores (and optionally features) of one test set.

    The states are "cat" lists; :meth:`compute` returns this rank's windows as numpy arrays, and :meth:`gathered`
    every rank's, in rank order, on rank 0 only (torchmetrics' own sync, an all-gather, would copy every score and
    feature of the test set to every rank, all of which but one would then throw them away); :meth:`assemble` checks
    them and builds the videos. Each state starts with one empty tensor of its dtype, so a rank that saw no window still
    gathers tensors of the right dtype. Features are kept flat (their width follows from the window count).
    """

    full_state_update = False

    def __init__(self, test_set, *, keep_features: bool = True) -> None:
        super().__init__(compute_with_cache=False, sync_on_compute=False)  # gathered to rank 0 by gathered()
        self.test_set = test_set
        self.keep_features = keep_features
        for key, dtype in (("video_index", torch.int64), ("window_index", torch.int64), ("scores", torch.float32),
                           ("features", torch.float16)):
            self.add_state(key, default=[], dist_reduce_fx="cat")
            getattr(self, key).append(torch.zeros(0, dtype=dtype))

    def update(self, video_index: torch.Tensor, window_index: torch.Tensor, scores: torch.Tensor,
               features: torch.Tensor | None = None) -> None:
        self.video_index.append(video_index.detach().reshape(-1).to(self.device, torch.int64))
        self.window_index.append(window_index.detach().reshape(-1).to(self.device, torch.int64))
        self.scores.append(scores.detach().reshape(-1).to(self.device, torch.float32))
        if features is not None and self.keep_features:
            self.features.append(features.detach().reshape(-1).to(self.device, torch.float16))

    def add(self, video_index: torch.Tensor, window_index: torch.Tensor, scores: torch.Tensor,
            features: torch.Tensor | None = None) -> None:
        """Record a batch: ``(video, window)`` indices, scores and optional ``[B, D]`` features."""
        self.update(video_index, window_index, scores, features)

    def compute(self) -> dict[str, np.ndarray]:
        """This rank's windows: ``video_index``, ``window_index``, ``scores`` (float64) and ``features`` (``[N, D]``
        float16, or None when none were kept)."""
        out = {key: dim_zero_cat(getattr(self, key)).cpu().numpy()
               for key in ("video_index", "window_index", "scores", "features")}
        out["scores"] = out["scores"].astype(np.float64)
        count = out["scores"].shape[0]
        out["features"] = out["features"].reshape(count, -1) if (count and out["features"].size) else None
        return out

    def gathered(self) -> dict[str, np.ndarray] | None:
        """Every DDP rank's windows concatenated in rank order, on rank 0 (None on the others; every rank must call
        it). One process: :meth:`compute`."""
        parts = gather_to_zero(self.compute())
        if parts is None:
            return None
        out = {key: np.concatenate([part[key] for part in parts]) for key in ("video_index", "window_index", "scores")}
        features = [part["features"] for part in parts if part["features"] is not None]
        out["features"] = np.concatenate(features) if features else None
        return out

    def assemble(self) -> list[VideoScores]:
        """Per-video scores in test-set order (every rank's windows: call it on one process, or see
        :meth:`gathered`); raises if any window is missing, duplicated or not finite."""
        return assemble_windows(self.test_set, **self.compute())


def assemble_windows(test_set, *, video_index: np.ndarray, window_index: np.ndarray, scores: np.ndarray,
                     features: np.ndarray | None) -> list[VideoScores]:
    """Per-video scores of ``test_set`` from windows in arrival order; raises if any window is missing, duplicated
    or not finite."""
    row_of: dict[tuple[int, int], int] = {}
    duplicates: list[tuple[int, int]] = []
    for row, key in enumerate(zip(video_index.tolist(), window_index.tolist())):
        if key in row_of:
            duplicates.append(key)
        row_of[key] = row
    if duplicates:
        raise EvaluationError(f"{test_set.name}: {len(duplicates)} windows were scored twice, e.g. "
                              f"(video, window) {duplicates[:3]}: the test loader read a video twice")
    stride = test_set.window_spec.stride
    videos, bad = [], []
    for v, record in enumerate(test_set.records):
        expected = num_windows(record.num_frames, stride=stride)
        missing = [w for w in range(expected) if (v, w) not in row_of]
        if missing:
            raise EvaluationError(f"{test_set.name}/{record.name}: {len(missing)} of {expected} windows "
                                  f"have no score (first missing: {missing[0]})")
        rows = [row_of[(v, w)] for w in range(expected)]
        window_scores = scores[rows]
        if not np.isfinite(window_scores).all():
            bad.append(record.name)
        videos.append(VideoScores(name=record.name, label=record.label, window_scores=window_scores,
                                  frame_scores=window_to_frame_scores(window_scores, record.num_frames,
                                                                      stride=stride),
                                  gt=record.gt, features=None if features is None else features[rows],
                                  classes=tuple(record.classes), fps=float(record.fps)))
    if bad:
        raise EvaluationError(f"{test_set.name}: NaN or inf scores in {len(bad)} videos: {', '.join(bad[:10])}")
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
