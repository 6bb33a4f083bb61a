"""95% bootstrap confidence intervals of micro AUC and AP by resampling test videos.

A replicate draws as many videos as the test set has, with replacement (``numpy.random.default_rng(seed)``,
``integers(0, V, size=(n, V))``), and computes the metric over the frames of the drawn videos concatenated (a video
drawn twice counts twice). The interval is the 2.5th and 97.5th percentile (numpy's linear interpolation) of the
replicates; replicates that drew one class only have no value and are left out (their count is reported).

Vectorised: frames are sorted once; runs of frames with the same score from the same video are merged into cells,
and a replicate is a weight per cell (how often its video was drawn), so every replicate is a cumulative sum over
cells, done for a chunk of replicates at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from copra_bench.evaluation.metrics import SortedFrames, ap_from_counts, auc_from_counts

#: Cells x replicates per chunk (bounds memory: about 8 bytes x 4 arrays x this).
CHUNK_ELEMENTS = 4_000_000


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
    counts = np.zeros((samples, num_videos), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(samples), num_videos), draws.ravel()), 1)
    return counts


def _cells(frames: SortedFrames) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal (score, video) in the sorted frames: video, positives, frames, whether a tie group ends there."""
    n = frames.scores.size
    boundary = frames.group_end.copy()
    boundary[:-1] |= frames.video[:-1] != frames.video[1:]
    ends = np.flatnonzero(boundary)
    starts = np.concatenate([[0], ends[:-1] + 1]) if n else ends
    positives = np.add.reduceat(frames.labels, starts) if n else np.zeros(0, np.int64)
    return frames.video[ends], positives, ends - starts + 1, frames.group_end[ends]


def bootstrap_intervals(frames: SortedFrames, num_videos: int, *, samples: int = 1000, seed: int = 0,
                        ap_variant: str = "step", level: float = 0.95) -> BootstrapResult:
    """Percentile intervals of micro AUC and AP (``ap_variant``) over ``samples`` video resamplings."""
    if samples < 1:
        nan = (float("nan"), float("nan"))
        return BootstrapResult(nan, nan, 0, 0, seed)
    video, positives, sizes, group_end = _cells(frames)
    counts = draw_counts(num_videos, samples, seed)
    aucs, aps = np.empty(samples), np.empty(samples)
    chunk = max(1, CHUNK_ELEMENTS // max(video.size, 1))
    for start in range(0, samples, chunk):
        weights = counts[start:start + chunk][:, video]            # [chunk, cells]
        tp = np.cumsum(weights * positives, axis=1)[:, group_end]
        fp = np.cumsum(weights * sizes, axis=1)[:, group_end] - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            aucs[start:start + chunk] = auc_from_counts(tp, fp)
            aps[start:start + chunk] = np.where(np.isfinite(aucs[start:start + chunk]),
                                                ap_from_counts(tp, fp, ap_variant), np.nan)
    defined = np.isfinite(aucs)
    tail = 100.0 * (1.0 - level) / 2.0

    def interval(values: np.ndarray) -> tuple[float, float]:
        if not defined.any():
            return float("nan"), float("nan")
        low, high = np.percentile(values[defined], [tail, 100.0 - tail])
        return float(low), float(high)

    return BootstrapResult(interval(aucs), interval(aps), samples, int((~defined).sum()), seed)
