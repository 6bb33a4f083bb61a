"""95% bootstrap confidence intervals of micro AUC and AP by resampling test videos.

A replicate draws as many videos as the test set has, with replacement (``numpy.random.default_rng(seed)``,
``integers(0, V, size=(n, V))``), and computes the metric over the frames of the drawn videos concatenated (a video
drawn twice counts twice). The interval is the 2.5th and 97.5th percentile (numpy's linear interpolation) of the
replicates; replicates that drew one class only have no value and are left out (their count is reported).

Exact and vectorised over replicates. Frames are sorted once. Only the tie groups holding positive frames
contribute to AUC and AP; for such a group ``g`` and a replicate with video counts ``c`` the cumulative counts are
linear in ``c``: ``TP_g = T[g] . c`` and ``FP_g = F[g] . c`` with ``T[g, v]`` / ``F[g, v]`` the positives /
negatives of video ``v`` scored at least the group's score. So all replicates are a few matrix products
(``[groups x videos] @ [videos x replicates]``), computed in blocks of groups; with the group's own positives
``dTP`` and tied negatives ``dFP``:

* AUC  = sum_g dTP_g (N - FP_g + dFP_g / 2) / (P N)
* AP step  = sum_g dTP_g prec_g / P, with prec_g = TP_g / (TP_g + FP_g)
* AP trapz = sum_g dTP_g (prec_g + prec_before_g) / (2 P), prec_before_g from the counts strictly above the group
  (1 when nothing is above: the curve's start point), exactly the points of sklearn's ``precision_recall_curve``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from copra_bench.evaluation.metrics import SortedFrames

#: Positive groups per block (bounds memory: a few arrays of block x replicates and block x videos).
GROUP_BLOCK = 2048
#: Integer counts stay exact in float32 below this total.
FLOAT32_EXACT = 2 ** 24


@dataclass
class BootstrapResult:
    """Percentile intervals of one step."""

    auc: tuple[float, float]
    ap: tuple[float, float]
    samples: int
    undefined_samples: int
    seed: int


def draw_counts(num_videos: int, samples: int, seed: int) -> np.ndarray:
    """``[samples, num_videos]``: how often each video is drawn in each replicate."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num_videos, size=(samples, num_videos))
    rows = np.repeat(np.arange(samples), num_videos)
    return np.bincount(rows * num_videos + draws.ravel(), minlength=samples * num_videos).reshape(samples, num_videos)


def replicate_metrics(frames: SortedFrames, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUC, step AP and trapezoidal AP of every replicate (``counts[b, v]``: draws of video v); NaN if one class."""
    samples, num_videos = counts.shape
    labels, video = frames.labels, frames.video
    group = np.concatenate([[0], np.cumsum(frames.group_end[:-1])]) if labels.size else labels
    is_pos = labels == 1
    pos_groups = np.unique(group[is_pos])                      # ascending = descending score
    rows_pos = np.searchsorted(pos_groups, group[is_pos])
    rows_neg = np.searchsorted(pos_groups, group[~is_pos])     # first positive group scored <= the negative
    video_pos, video_neg = video[is_pos], video[~is_pos]
    tied = rows_neg < pos_groups.size
    tied[tied] = pos_groups[rows_neg[tied]] == group[~is_pos][tied]
    n_groups = pos_groups.size
    d_pos = sparse.csr_matrix((np.ones(rows_pos.size), (rows_pos, video_pos)), shape=(n_groups, num_videos))
    d_tie = sparse.csr_matrix((np.ones(int(tied.sum())), (rows_neg[tied], video_neg[tied])),
                              shape=(n_groups, num_videos))
    per_video_pos = np.bincount(video_pos, minlength=num_videos).astype(np.float64)
    per_video_neg = np.bincount(video_neg, minlength=num_videos).astype(np.float64)

    weights = counts.astype(np.float64)
    totals = weights @ (per_video_pos + per_video_neg)
    dtype = np.float32 if totals.max(initial=0) < FLOAT32_EXACT else np.float64
    c = weights.T.astype(dtype)                                # [videos, replicates]
    p, n = weights @ per_video_pos, weights @ per_video_neg
    auc_sum, step_sum, trapz_sum = np.zeros(samples), np.zeros(samples), np.zeros(samples)
    carry_pos, carry_neg = np.zeros(num_videos), np.zeros(num_videos)
    for start in range(0, n_groups, GROUP_BLOCK):
        stop = min(start + GROUP_BLOCK, n_groups)
        size = stop - start
        d_pos_block = d_pos[start:stop]
        cum_pos = carry_pos + np.cumsum(d_pos_block.toarray(), axis=0)
        lo, hi = np.searchsorted(rows_neg, [start, stop])    # negatives below every positive group never count
        d_neg = np.bincount((rows_neg[lo:hi] - start) * num_videos + video_neg[lo:hi],
                            minlength=size * num_videos).reshape(size, num_videos)
        cum_neg = carry_neg + np.cumsum(d_neg, axis=0)
        carry_pos, carry_neg = cum_pos[-1], cum_neg[-1]
        tp = (cum_pos.astype(dtype) @ c).astype(np.float64)    # [groups in block, replicates]
        fp = (cum_neg.astype(dtype) @ c).astype(np.float64)
        d_tp = np.asarray(d_pos_block @ weights.T)
        d_fp = np.asarray(d_tie[start:stop] @ weights.T)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
            above_tp, above_fp = tp - d_tp, fp - d_fp
            before = np.where(above_tp + above_fp > 0, above_tp / (above_tp + above_fp), 1.0)
        auc_sum += (d_tp * (n - fp + 0.5 * d_fp)).sum(axis=0)
        step_sum += (d_tp * precision).sum(axis=0)
        trapz_sum += (d_tp * (precision + before)).sum(axis=0) / 2.0
    defined = (p > 0) & (n > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where(defined, auc_sum / (p * n), np.nan)
        step = np.where(defined, step_sum / p, np.nan)
        trapz = np.where(defined, trapz_sum / p, np.nan)
    return auc, step, trapz


def bootstrap_intervals(frames: SortedFrames, num_videos: int, *, samples: int = 1000, seed: int = 0,
                        ap_variant: str = "step", level: float = 0.95) -> BootstrapResult:
    """Percentile intervals of micro AUC and AP (``ap_variant``) over ``samples`` video resamplings."""
    if samples < 1:
        nan = (float("nan"), float("nan"))
        return BootstrapResult(nan, nan, 0, 0, seed)
    if ap_variant not in ("step", "trapz"):
        raise ValueError(f"AP variant must be 'step' or 'trapz', got {ap_variant!r}")
    auc, step, trapz = replicate_metrics(frames, draw_counts(num_videos, samples, seed))
    aps = step if ap_variant == "step" else trapz
    defined = np.isfinite(auc)
    tail = 100.0 * (1.0 - level) / 2.0

    def interval(values: np.ndarray) -> tuple[float, float]:
        if not defined.any():
            return float("nan"), float("nan")
        low, high = np.percentile(values[defined], [tail, 100.0 - tail])
        return float(low), float(high)

    return BootstrapResult(interval(auc), interval(aps), samples, int((~defined).sum()), seed)
