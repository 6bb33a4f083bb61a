"""Frame-level curve metrics of the field, exact and vectorised (numpy), equal to sklearn to 1e-6.

Everything works on frames sorted once by score (:class:`SortedFrames`): the metrics of any subset of frames (the
abnormal videos only, one class plus the normal videos, one bootstrap replicate with per-frame weights) are then
one O(n) pass over the sorted arrays, with ties handled the way sklearn handles them:

* ``auc``: ROC-AUC = Mann-Whitney U / (P N), ties counted one half (sklearn ``roc_auc_score``).
* ``ap_step``: ``sum_g (R_g - R_{g-1}) P_g`` over the distinct thresholds g (sklearn ``average_precision_score``;
  VadCLIP).
* ``ap_trapz``: trapezoid area under the precision-recall points of ``precision_recall_curve`` including its final
  point (recall 0, precision 1) (sklearn ``auc(recall, precision)``; XDVioDet, RTFM, UR-DMU, LAVAD, VERA).
* ``far``: share of the frames of normal videos scored ``>= threshold`` (0.5); ``>`` and a per-video mean
  are options.

A metric that has no value on the data (one class only) is :data:`UNDEFINED` (NaN) plus a reason, never 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNDEFINED = float("nan")
AP_VARIANTS = ("step", "trapz")


@dataclass
class SortedFrames:
    """Frames of a test set in descending score order, with what every metric needs per frame.

    Attributes:
        scores: Scores, descending.
        labels: 0/1 frame ground truth in that order (int64).
        video: Index of each frame's video (into the test set's video list).
        group_end: True where the next frame has another score (end of a tie group).
    """

    scores: np.ndarray
    labels: np.ndarray
    video: np.ndarray
    group_end: np.ndarray

    @classmethod
    def build(cls, scores: np.ndarray, labels: np.ndarray, video: np.ndarray | None = None) -> SortedFrames:
        scores = np.asarray(scores, dtype=np.float64)
        labels = np.asarray(labels).astype(np.int64)
        if scores.shape != labels.shape or scores.ndim != 1:
            raise ValueError(f"{scores.shape} scores for {labels.shape} ground-truth frames")
        video = np.zeros(scores.shape, np.int64) if video is None else np.asarray(video, dtype=np.int64)
        order = np.argsort(-scores, kind="stable")
        sorted_scores = scores[order]
        return cls(sorted_scores, labels[order], video[order], _group_ends(sorted_scores))

    def subset(self, frame_mask: np.ndarray) -> SortedFrames:
        """The frames where ``frame_mask`` (in sorted order) is true; they stay sorted."""
        scores = self.scores[frame_mask]
        return SortedFrames(scores, self.labels[frame_mask], self.video[frame_mask], _group_ends(scores))

    def of_videos(self, videos: np.ndarray) -> SortedFrames:
        """The frames of the given video indices."""
        keep = np.zeros(int(self.video.max(initial=0)) + 1, dtype=bool)
        keep[np.asarray(videos, dtype=np.int64)] = True
        return self.subset(keep[self.video])


def _group_ends(sorted_scores: np.ndarray) -> np.ndarray:
    ends = np.ones(sorted_scores.shape, dtype=bool)
    if sorted_scores.size > 1:
        ends[:-1] = sorted_scores[:-1] != sorted_scores[1:]
    return ends


def group_counts(frames: SortedFrames, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (true positives, false positives) at the end of each tie group, in descending score order.

    ``weights`` (one per sorted frame) count a frame several times (bootstrap replicates); shape ``[..., n]``.
    """
    if weights is None:
        ends = np.flatnonzero(frames.group_end)
        tp = np.cumsum(frames.labels)[ends]
        return tp, ends + 1 - tp
    tp = np.cumsum(weights * frames.labels, axis=-1)[..., frames.group_end]
    fp = np.cumsum(weights, axis=-1)[..., frames.group_end] - tp
    return tp, fp


def auc_from_counts(tp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """ROC-AUC from cumulative group counts (trapezoid over the ROC = Mann-Whitney with ties as one half)."""
    p, n = tp[..., -1:], fp[..., -1:]
    prev_tp = np.concatenate([np.zeros_like(tp[..., :1]), tp[..., :-1]], axis=-1)
    prev_fp = np.concatenate([np.zeros_like(fp[..., :1]), fp[..., :-1]], axis=-1)
    area = ((fp - prev_fp) * (tp + prev_tp)).sum(axis=-1, keepdims=True) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return (area / (p * n))[..., 0].astype(np.float64)


def ap_from_counts(tp: np.ndarray, fp: np.ndarray, variant: str) -> np.ndarray:
    """Average precision (``step`` or ``trapz``) from cumulative group counts, as sklearn computes it."""
    p = tp[..., -1:].astype(np.float64)
    total = tp + fp
    with np.errstate(invalid="ignore", divide="ignore"):
        # A group of zero weight (bootstrap: its videos not drawn) leaves the counts unchanged, so its precision is
        # the previous group's; before any frame that is the curve's start point, precision 1.
        precision = np.where(total > 0, tp / np.where(total > 0, total, 1), 1.0)
        recall = tp / p
    prev_recall = np.concatenate([np.zeros_like(recall[..., :1]), recall[..., :-1]], axis=-1)
    if variant == "step":
        value = ((recall - prev_recall) * precision).sum(axis=-1)
    elif variant == "trapz":
        prev_precision = np.concatenate([np.ones_like(precision[..., :1]), precision[..., :-1]], axis=-1)
        value = ((recall - prev_recall) * (precision + prev_precision)).sum(axis=-1) / 2.0
    else:
        raise ValueError(f"AP variant must be one of {AP_VARIANTS}, got {variant!r}")
    return np.where(p[..., 0] > 0, value, np.nan)


def one_class_reason(frames: SortedFrames) -> str | None:
    """Why ROC/PR metrics are undefined on these frames (None when both classes are present)."""
    positives = int(frames.labels.sum())
    if frames.labels.size == 0:
        return "no frames"
    if positives == 0:
        return f"all {frames.labels.size} frames are normal"
    if positives == frames.labels.size:
        return f"all {frames.labels.size} frames are anomalous"
    return None


@dataclass
class CurveMetrics:
    """AUC and both AP variants of one set of frames; NaN with a reason when undefined."""

    auc: float
    ap_step: float
    ap_trapz: float
    reason: str | None = None


def curve_metrics(frames: SortedFrames) -> CurveMetrics:
    """Micro AUC, step-wise AP and trapezoidal AP of (a subset of) sorted frames."""
    reason = one_class_reason(frames)
    if reason is not None:
        return CurveMetrics(UNDEFINED, UNDEFINED, UNDEFINED, reason)
    tp, fp = group_counts(frames)
    return CurveMetrics(float(auc_from_counts(tp, fp)), float(ap_from_counts(tp, fp, "step")),
                        float(ap_from_counts(tp, fp, "trapz")))


def per_video_auc(frames: SortedFrames, num_videos: int) -> np.ndarray:
    """ROC-AUC of every video on its own frames (NaN for videos with one class), in one vectorised pass."""
    # Re-sort by (video, descending score); the global order is descending already, so a stable sort on video keeps it.
    order = np.argsort(frames.video, kind="stable")
    video, labels, scores = frames.video[order], frames.labels[order], frames.scores[order]
    ends = np.ones(video.shape, dtype=bool)
    ends[:-1] = (video[:-1] != video[1:]) | (scores[:-1] != scores[1:])
    tp_all, cum_all = np.cumsum(labels), np.arange(1, labels.size + 1)
    # Counts restart at every video: subtract the totals of the videos before.
    starts = np.searchsorted(video, np.arange(num_videos), side="left")
    stops = np.searchsorted(video, np.arange(num_videos), side="right")
    base_tp = np.where(starts > 0, tp_all[np.maximum(starts - 1, 0)], 0)
    base_all = starts
    group_video = video[ends]
    tp = tp_all[ends] - base_tp[group_video]
    fp = cum_all[ends] - base_all[group_video] - tp
    first = np.ones(group_video.shape, dtype=bool)
    first[1:] = group_video[1:] != group_video[:-1]
    prev_tp = np.where(first, 0, np.concatenate([[0], tp[:-1]]))
    prev_fp = np.where(first, 0, np.concatenate([[0], fp[:-1]]))
    area = np.bincount(group_video, weights=(fp - prev_fp) * (tp + prev_tp) / 2.0, minlength=num_videos)
    p = np.bincount(video, weights=labels, minlength=num_videos)
    n = (stops - starts) - p
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((p > 0) & (n > 0), area / (p * n), np.nan)


def false_alarm_rate(frames: SortedFrames, threshold: float = 0.5, *, compare: str = ">=",
                     unit: str = "frames") -> float:
    """Share of frames scored ``>= threshold`` (or ``>``: MIST/S3R-style code); call it on the frames of normal
    videos. ``unit="frames"`` pools every frame; ``"videos"`` averages the rate of each video."""
    if frames.scores.size == 0:
        return UNDEFINED
    if compare not in (">=", ">"):
        raise ValueError(f"FAR comparison must be '>=' or '>', got {compare!r}")
    alarm = frames.scores >= threshold if compare == ">=" else frames.scores > threshold
    if unit == "frames":
        return float(np.count_nonzero(alarm) / frames.scores.size)
    if unit != "videos":
        raise ValueError(f"FAR unit must be 'frames' or 'videos', got {unit!r}")
    present, video = np.unique(frames.video, return_inverse=True)
    rates = np.bincount(video, weights=alarm) / np.bincount(video)
    return float(rates.mean()) if present.size else UNDEFINED


def padded(frames: SortedFrames, num_videos: int) -> SortedFrames:
    """The frames plus, per video, one normal frame scored 0 and one anomalous frame scored 1 (UBnormal's macro
    AUC: ``roc_auc_score(concatenate(([0], gt, [1])), concatenate(([0], pred, [1])))`` per video)."""
    videos = np.arange(num_videos, dtype=np.int64)
    scores = np.concatenate([frames.scores, np.zeros(num_videos), np.ones(num_videos)])
    labels = np.concatenate([frames.labels, np.zeros(num_videos, np.int64), np.ones(num_videos, np.int64)])
    return SortedFrames.build(scores, labels, np.concatenate([frames.video, videos, videos]))


def video_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Video-level ROC-AUC (validation on training videos, which have video labels only); NaN if one class."""
    frames = SortedFrames.build(np.asarray(scores, dtype=np.float64), np.asarray(labels))
    return curve_metrics(frames).auc
