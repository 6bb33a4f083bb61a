"""VERA's three-step scoring over per-window scores (reference code vera-framework/VERA, arXiv 2412.01095).

* Step 1: the initial window scores, spread to frames.
* Step 2, retrieval refinement: per window, the ``top_n = int(fraction * n_windows)`` windows of the same video
  whose features are most cosine-similar (itself included) vote with weights ``softmax(temperature * cosine)``.
* Step 3: Gaussian smoothing of the Step 2 window scores (``np.convolve(mode="same")`` with a normalised kernel),
  spread to frames, then whole-video position weighting ``exp(-0.5 ((i - c) / s)^2)``, ``c = s = int(n_frames / 2)``.

VERA's released code and its paper text differ; the presets (:mod:`copra_bench.evaluation.recipes`) set:

============================  ==========================================  ===========================================
parameter                     ``vera_code`` (VERA's three scripts)        ``vera_paper``
============================  ==========================================  ===========================================
fraction (top_n / windows)    0.15 (UCF and XD)                           0.10 UCF, 0.15 XD
temperature                   10                                          10
top_n rounds to 0             all windows (``argsort(...)[:, -0:]``)      1 window
all windows vote up to        XD AUC script: 10 windows; XD AP: 4         -
kernel size / sigma           15 / 10                                     15 / 10 UCF, 30 / 30 XD
kernel grid                   ``linspace(-size//2, size//2, size)``       centred ``arange(size) - (size - 1) / 2``
videos shorter than kernel    numpy's ``same`` output, first n            centred like longer videos
window scores after smoothing rounded to 0.1 (UCF, XD AUC)                kept
position weighting            UCF, XD AUC                                 every dataset
frame scores                  XD AP: sigmoid, then rounded to 0.1         kept
============================  ==========================================  ===========================================

ShanghaiTech, the synthetic world and unknown datasets use the UCF-Crime parameters (single-camera surveillance).
Which dataset a test set is comes from the DataModule that made it (``TestSet.family``), never from its name.
Everything is numpy, vectorised per video; similarities are float32 (as VERA's numpy code), the rest float64 unless
``normalise_dtype="float32"`` (VERA's float32 path: normalisation and softmax in float32 as well). Ties at the top-n
cut go to the higher window index (deterministic); VERA's ``np.argsort`` is numpy's unstable quicksort, whose
choice among exactly equal similarities depends on the numpy version.
"""

from __future__ import annotations

import numpy as np

from copra_bench.errors import EvaluationError
from copra_bench.evaluation.recipes import (  # noqa: F401  (re-exported: the names callers import from here)
    DATASET_FAMILIES,
    DEFAULT_PRESET,
    PROTOCOLS,
    PostprocessParams,
    resolve_protocol,
)
from copra_bench.windows import window_to_frame_scores

STEPS = ("step1", "step2", "step3")
#: Rows of the similarity matrix computed at once (bounds memory for hour-long videos).
ROW_BLOCK = 1024

#: ``{preset: {family: params}}``: the Steps 2-3 parameters of each preset's AUC recipe (the frame scores a run saves
#: and plots); :data:`~copra_bench.evaluation.recipes.PROTOCOLS` has both recipes of every preset.
PRESETS: dict[str, dict[str, PostprocessParams]] = {
    name: {family: recipes[0].params for family, recipes in table.items()} for name, table in PROTOCOLS.items()}


def resolve_preset(preset: str, family: str) -> tuple[str, PostprocessParams]:
    """``(family, params)`` of a preset's AUC recipe for a test set of dataset ``family`` (the test set's own, see
    :class:`~copra_bench.datamodules.base.TestSet`). ``preset`` may force another family: ``vera_code:xd_violence``."""
    protocol = resolve_protocol(preset, family)
    return protocol.family, protocol.auc.params


# ------------------------------------------------------------------------------------------------------ Step 2
def top_n_of(num_windows: int, params: PostprocessParams) -> int:
    """Windows that vote for each window: ``int(fraction * n)``; 0 means all (VERA code) or 1 (guarded); every
    window in videos of at most ``all_windows_up_to`` windows (VERA's XD scripts: 10 for AUC, 4 for AP)."""
    if num_windows <= params.all_windows_up_to:
        return num_windows
    top_n = int(params.fraction * num_windows)
    if top_n < 1:
        top_n = num_windows if params.top_n_zero == "all" else 1
    return min(top_n, num_windows)


def _normalised(features: np.ndarray, video: str, dtype: str = "float64") -> np.ndarray:
    """Unit rows; ``dtype`` is the arithmetic (VERA divides float32 features by their float32 norms)."""
    features = np.asarray(features, dtype=dtype)
    if not np.isfinite(features).all():
        raise EvaluationError(f"{video}: NaN or inf in the window features used by Step 2")
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    if (norms == 0).any():
        raise EvaluationError(f"{video}: window {int(np.flatnonzero(norms[:, 0] == 0)[0])} has an all-zero feature; "
                              "cosine similarity is undefined (use another feature source for Step 2)")
    return features / norms


def _top_mask(similarity: np.ndarray, top_n: int) -> np.ndarray:
    """Boolean mask of the ``top_n`` largest entries per row; ties at the cut go to the higher index (as a stable
    ascending argsort's last ``top_n``, the choice of VERA's ``argsort(...)[:, -top_n:]`` on distinct values), so
    the choice never depends on the selection algorithm. Partitions values, not indices (4x faster on big rows)."""
    n = similarity.shape[1]
    if top_n >= n:
        return np.ones(similarity.shape, dtype=bool)
    cut = np.partition(similarity, n - top_n, axis=1)[:, n - top_n:n - top_n + 1]
    mask = similarity >= cut
    ambiguous = np.flatnonzero(mask.sum(axis=1) > top_n)
    if ambiguous.size:
        chosen = np.argsort(similarity[ambiguous], axis=1, kind="stable")[:, n - top_n:]
        mask[ambiguous] = False
        mask[ambiguous[:, None], chosen] = True
    return mask


def retrieval_refine(scores: np.ndarray, features: np.ndarray, params: PostprocessParams, *,
                     video: str = "") -> np.ndarray:
    """Step 2 on one video: ``[n]`` window scores, ``[n, D]`` window features -> refined ``[n]`` scores."""
    scores = np.asarray(scores, dtype=np.float64)
    if features.shape[0] != scores.shape[0]:
        raise EvaluationError(f"{video}: {features.shape[0]} window features for {scores.shape[0]} window scores")
    unit = _normalised(features, video, params.normalise_dtype).astype(params.similarity_dtype)
    vera32 = params.normalise_dtype == "float32"
    n = scores.shape[0]
    top_n = top_n_of(n, params)
    refined = np.empty_like(scores)
    for start in range(0, n, ROW_BLOCK):
        similarity = unit[start:start + ROW_BLOCK] @ unit.T
        rows = similarity.shape[0]
        mask = _top_mask(similarity, top_n)
        # every row holds exactly top_n selected entries, so the selection reshapes to [rows, top_n] in row order
        flat = np.flatnonzero(mask)
        top = similarity.ravel()[flat].reshape(rows, top_n)
        voters = scores[flat % n].reshape(rows, top_n)
        if vera32:  # VERA: softmax(top * 10) in the similarities' float32, then np.dot with float64 scores
            logits = top * top.dtype.type(params.temperature)
            weights = np.exp(logits - logits.max(axis=1, keepdims=True))
            weights = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float64)
            refined[start:start + rows] = (weights * voters).sum(axis=1)
            continue
        logits = params.temperature * top.astype(np.float64)
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        refined[start:start + rows] = (weights * voters).sum(axis=1) / weights.sum(axis=1)
    return refined


# ------------------------------------------------------------------------------------------------------ Step 3
def gaussian_kernel(size: int, sigma: float, grid: str = "vera") -> np.ndarray:
    """Normalised 1-D Gaussian. ``vera`` grid: ``linspace(-size//2, size//2, size)`` as VERA's code writes it
    (Python reads ``-size//2`` as ``(-size)//2``, so odd sizes are off-centre: 15 gives -8..7)."""
    if size < 1 or sigma <= 0:
        raise EvaluationError(f"Gaussian kernel needs size >= 1 and sigma > 0, got {size} and {sigma}")
    if grid == "vera":
        x = np.linspace(-size // 2, size // 2, size)
    elif grid == "centred":
        x = np.arange(size) - (size - 1) / 2.0
    else:
        raise EvaluationError(f"kernel grid must be 'vera' or 'centred', got {grid!r}")
    kernel = np.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return kernel / kernel.sum()


def smooth(scores: np.ndarray, params: PostprocessParams) -> np.ndarray:
    """Step 3a on one video's window scores: ``np.convolve(scores, kernel, mode="same")``.

    For videos with fewer windows than the kernel numpy's ``same`` returns ``len(kernel)`` values centred on the
    kernel; VERA's code reads its first ``n`` (``short_video="numpy_same"``); ``centred`` aligns them like longer
    videos. Both equal numpy's ``same`` whenever ``n >= size``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    kernel = gaussian_kernel(params.kernel_size, params.kernel_sigma, params.kernel_grid)
    full = np.convolve(scores, kernel, mode="full")
    n, size = scores.shape[0], kernel.shape[0]
    if params.short_video == "numpy_same":
        offset = (min(n, size) - 1) // 2
    elif params.short_video == "centred":
        offset = (size - 1) // 2
    else:
        raise EvaluationError(f"short_video must be 'numpy_same' or 'centred', got {params.short_video!r}")
    out = full[offset:offset + n]
    if params.round_window_decimals is not None:
        out = np.round(out, params.round_window_decimals)
    return out


def position_weights(num_frames: int) -> np.ndarray:
    """``exp(-0.5 ((i - c) / s)^2)`` with ``c = s = int(n / 2)`` (``s`` at least 1: a 1-frame video keeps its score)."""
    centre = int(num_frames / 2)
    spread = max(centre, 1)
    i = np.arange(num_frames, dtype=np.float64)
    return np.exp(-0.5 * ((i - centre) / spread) ** 2)


def finish_frames(frame_scores: np.ndarray, params: PostprocessParams) -> np.ndarray:
    """Step 3b on one video's frame scores: position weighting, then VERA XD code's sigmoid and rounding."""
    out = np.asarray(frame_scores, dtype=np.float64)
    if params.position_weighting:
        out = out * position_weights(out.shape[0])
    if params.sigmoid:
        out = 1.0 / (1.0 + np.exp(-out))
    if params.round_frame_decimals is not None:
        out = np.round(out, params.round_frame_decimals)
    return out


def three_steps(window_scores: np.ndarray, features: np.ndarray | None, num_frames: int, stride: int,
                params: PostprocessParams, *, video: str = "") -> dict[str, np.ndarray | None]:
    """Frame scores of one video after each step (``step2``/``step3`` are None without features)."""
    out: dict[str, np.ndarray | None] = {"step1": window_to_frame_scores(window_scores, num_frames, stride=stride)}
    if features is None:
        out["step2"] = out["step3"] = None
        return out
    refined = retrieval_refine(window_scores, features, params, video=video)
    out["step2"] = window_to_frame_scores(refined, num_frames, stride=stride)
    smoothed = smooth(refined, params)
    out["step3"] = finish_frames(window_to_frame_scores(smoothed, num_frames, stride=stride), params)
    return out
