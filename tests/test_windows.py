"""Window geometry of the dense test protocol, and window -> frame score assembly."""

from __future__ import annotations

import numpy as np
import pytest

from copra_bench.errors import EvaluationError
from copra_bench.windows import (WindowSpec, num_windows, uniform_indices, window_bounds, window_centres,
                                 window_frame_indices, window_to_frame_scores)


def test_centres_every_16th_frame():
    assert window_centres(50, stride=16).tolist() == [0, 16, 32, 48]
    assert window_centres(48, stride=16).tolist() == [0, 16, 32]
    assert window_centres(1, stride=16).tolist() == [0]


def test_bounds_are_10_seconds_clipped_to_the_video():
    # 30 fps: 150 frames either side of the centre.
    starts, ends = window_bounds(1000, fps=30, spec=WindowSpec())
    centres = window_centres(1000)
    assert starts[0] == 0 and ends[0] == 150
    i = 20  # centre 320: a full window
    assert (starts[i], ends[i]) == (170, 470)
    assert ends[-1] == 1000 and starts[-1] == centres[-1] - 150
    assert np.all(ends - starts <= 300)
    # 24 fps (XD-Violence): 120 each side
    starts, ends = window_bounds(1000, fps=24, spec=WindowSpec())
    assert (starts[10], ends[10]) == (40, 280)


def test_k_frames_per_window_uniform_like_vera():
    idx = window_frame_indices(1000, fps=30, spec=WindowSpec(frames_per_window=8))
    assert idx.shape == (num_windows(1000), 8)
    # VERA: arange(start, end, (end - start) / 8), truncated to int
    starts, ends = window_bounds(1000, fps=30, spec=WindowSpec())
    for w in range(idx.shape[0]):
        ref = np.arange(starts[w], ends[w], (ends[w] - starts[w]) / 8)[:8].astype(int)
        assert idx[w].tolist() == ref.tolist()
        assert np.all(idx[w] >= starts[w]) and np.all(idx[w] < ends[w])
        assert np.all(np.diff(idx[w]) >= 0)


def test_uniform_indices_is_exact_where_float_arange_is_not():
    # arange(0, 7, 7/8) style float steps can produce 9 values; the integer form always gives K
    for start, end in [(0, 7), (3, 10), (0, 1), (5, 300), (0, 299)]:
        got = uniform_indices(start, end, 8)
        assert got.shape == (8,) and got.min() >= start and got.max() < max(end, start + 1)


def test_every_frame_covered_exactly_once():
    for n in [1, 15, 16, 17, 160, 1000, 1412]:
        spec = WindowSpec()
        w = num_windows(n)
        coverage = np.zeros(n, dtype=int)
        for i in range(w):
            lo, hi = i * spec.stride, min((i + 1) * spec.stride, n)
            coverage[lo:hi] += 1
        assert np.all(coverage == 1)
        scores = np.arange(w, dtype=float)
        frames = window_to_frame_scores(scores, n)
        assert frames.shape == (n,)
        # frame f carries the score of the window whose centre is the last one <= f
        assert np.all(frames == np.arange(n) // 16)


def test_frame_assembly_hand_computed():
    scores = np.array([0.1, 0.9, 0.4])
    got = window_to_frame_scores(scores, 40, stride=16)
    expected = np.array([0.1] * 16 + [0.9] * 16 + [0.4] * 8)
    np.testing.assert_array_equal(got, expected)
    got = window_to_frame_scores(np.array([0.2, 0.7]), 5, stride=4)
    np.testing.assert_array_equal(got, [0.2, 0.2, 0.2, 0.2, 0.7])


def test_wrong_number_of_window_scores_is_an_error():
    with pytest.raises(EvaluationError, match="expected 3"):
        window_to_frame_scores(np.zeros(2), 40, stride=16)
