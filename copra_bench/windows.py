"""Dense-window geometry of the LAVAD / VERA / COPRA test protocol.

A test video of ``n`` frames is scored on overlapping windows centred on every ``stride``-th frame
(``0, 16, 32, ...``). The window around centre ``c`` spans ``[max(c - h, 0), min(c + h, n))`` with
``h = round(seconds * fps / 2)`` (5 s each side, 10 s in all), and ``K`` frames are sampled from it uniformly:
``start + floor(i * (end - start) / K)`` for ``i = 0..K-1`` — VERA's ``arange(start, end, (end - start) / K)``
written in integer arithmetic, which always yields exactly ``K`` indices (the float ``arange`` can yield ``K + 1``).

A window's score covers the ``stride`` frames starting at its centre; the last window covers up to the end of the
video, so every frame gets exactly one window score (``np.repeat(scores, stride)[:n]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from copra_bench.errors import EvaluationError


@dataclass(frozen=True)
class WindowSpec:
    """How a test video is cut into windows.

    Attributes:
        stride: Frames between consecutive window centres (the field uses 16).
        seconds: Window length in seconds (10 s: 5 s either side of the centre).
        frames_per_window: ``K``, frames sampled per window (8 in COPRA and VERA).
    """

    stride: int = 16
    seconds: float = 10.0
    frames_per_window: int = 8

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ValueError(f"window stride must be >= 1, got {self.stride}")
        if self.seconds <= 0:
            raise ValueError(f"window seconds must be > 0, got {self.seconds}")
        if self.frames_per_window < 1:
            raise ValueError(f"frames_per_window must be >= 1, got {self.frames_per_window}")


def window_centres(num_frames: int, *, stride: int = 16) -> np.ndarray:
    """Centres ``0, stride, 2*stride, ...`` below ``num_frames``."""
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
    return np.arange(0, num_frames, stride, dtype=np.int64)


def half_window(*, fps: float, seconds: float) -> int:
    """Frames on each side of a centre: ``round(seconds * fps / 2)`` (150 at 30 fps, 120 at 24 fps)."""
    return int(round(seconds * fps / 2.0))


def window_bounds(num_frames: int, *, fps: float, spec: WindowSpec = WindowSpec()) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and end (exclusive) frame of every window of a video."""
    centres = window_centres(num_frames, stride=spec.stride)
    half = half_window(fps=fps, seconds=spec.seconds)
    starts = np.maximum(centres - half, 0)
    ends = np.minimum(centres + half, num_frames)
    # A window must hold at least its own centre frame (matters only for fps * seconds < 2).
    ends = np.maximum(ends, centres + 1)
    return starts, ends


def uniform_indices(start: int | np.ndarray, end: int | np.ndarray, k: int) -> np.ndarray:
    """``k`` frame indices spread uniformly over ``[start, end)`` (VERA's sampling, integer exact).

    Works on scalars (returns ``[k]``) and on arrays of bounds (returns ``[n, k]``). Short spans repeat frames.
    """
    start_arr = np.asarray(start, dtype=np.int64)
    end_arr = np.asarray(end, dtype=np.int64)
    steps = np.arange(k, dtype=np.int64)
    span = (end_arr - start_arr)[..., None]
    return start_arr[..., None] + (steps * span) // k


def window_frame_indices(num_frames: int, *, fps: float, spec: WindowSpec = WindowSpec()) -> np.ndarray:
    """``[num_windows, K]`` frame indices of every window of a video, in window order."""
    starts, ends = window_bounds(num_frames, fps=fps, spec=spec)
    return uniform_indices(starts, ends, spec.frames_per_window)


def num_windows(num_frames: int, *, stride: int = 16) -> int:
    """Number of windows of a video: ``ceil(num_frames / stride)``."""
    return -(-num_frames // stride)


def window_to_frame_scores(window_scores: np.ndarray, num_frames: int, *, stride: int = 16) -> np.ndarray:
    """Spread window scores to frames: window ``i`` covers frames ``[i*stride, min((i+1)*stride, n))``.

    Raises:
        EvaluationError: if the number of window scores is not ``ceil(num_frames / stride)``.
    """
    window_scores = np.asarray(window_scores)
    expected = num_windows(num_frames, stride=stride)
    if window_scores.ndim != 1 or window_scores.shape[0] != expected:
        raise EvaluationError(
            f"{window_scores.shape[0] if window_scores.ndim else 0} window scores for a video of {num_frames} frames "
            f"at stride {stride}; expected {expected}"
        )
    return np.repeat(window_scores, stride)[:num_frames]
