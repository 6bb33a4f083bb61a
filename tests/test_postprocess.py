"""VERA's three steps against hand-computed cases and against a line-by-line transcription of VERA's released
scripts (compute_auc.py for UCF-Crime, compute_AP_XD_Violence.py), and the presets against the protocol doc."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from copra_bench.errors import EvaluationError
from copra_bench.evaluation.assembly import VideoScores
from copra_bench.evaluation.postprocess import (
    PRESETS,
    PostprocessParams,
    gaussian_kernel,
    position_weights,
    resolve_preset,
    retrieval_refine,
    smooth,
    three_steps,
    top_n_of,
)
from copra_bench.evaluation.protocol import evaluate_test_set
from copra_bench.evaluation.recipes import PROTOCOLS
from copra_bench.windows import window_to_frame_scores

EXACT = PostprocessParams(similarity_dtype="float64")


def test_top_n_is_int_of_fraction_with_the_zero_rule():
    assert top_n_of(100, EXACT) == 15 and top_n_of(7, EXACT) == 1 and top_n_of(6, EXACT) == 6  # int(0.9) = 0 -> all
    assert top_n_of(6, replace(EXACT, top_n_zero="one")) == 1
    assert top_n_of(10, replace(EXACT, fraction=0.1)) == 1 and top_n_of(29, replace(EXACT, fraction=0.1)) == 2


def test_retrieval_refinement_by_hand():
    # windows 0 and 1 look alike, window 2 differs; top_n = int(0.7 * 3) = 2, temperature 1
    params = replace(EXACT, fraction=0.7, temperature=1.0)
    features = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])  # norms differ: cosine, not dot product
    scores = np.array([0.2, 0.6, 0.9])
    got = retrieval_refine(scores, features, params)
    # row 0: cosines (1, 1, 0) -> windows 0, 1 with equal weights
    # row 2: cosines (0, 0, 1) -> itself and one of the tied windows 0/1: the higher index (1), as VERA's argsort
    e = math.e
    expected = [(0.2 + 0.6) / 2, (0.2 + 0.6) / 2, (1 * 0.6 + e * 0.9) / (1 + e)]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    with pytest.raises(EvaluationError, match="window 1 has an all-zero feature"):
        retrieval_refine(scores, np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]), params, video="v")


def test_gaussian_kernel_and_smoothing_by_hand():
    kernel = gaussian_kernel(15, 10.0, "vera")
    x = np.linspace(-8, 7, 15)  # Python reads -15//2 as -8: VERA's grid is off-centre
    np.testing.assert_allclose(kernel, np.exp(-x ** 2 / 200) / np.exp(-x ** 2 / 200).sum())
    centred = gaussian_kernel(3, 1.0, "centred")
    w = np.exp(-0.5)
    np.testing.assert_allclose(centred, [w / (1 + 2 * w), 1 / (1 + 2 * w), w / (1 + 2 * w)])
    params = replace(EXACT, kernel_size=3, kernel_sigma=1.0, kernel_grid="centred", round_window_decimals=None)
    scores = np.array([1.0, 0.0, 0.0, 0.5])
    a, b = centred[0], centred[1]  # symmetric kernel: out[i] = a s[i-1] + b s[i] + a s[i+1], zero padded
    np.testing.assert_allclose(smooth(scores, params), [b, a, 0.5 * a, 0.5 * b])


def test_short_videos_follow_numpy_same_or_centre():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 14, 15, 40):
        scores = rng.random(n)
        kernel = gaussian_kernel(15, 10.0, "vera")
        vera = np.convolve(scores, kernel, mode="same")[:n]  # VERA reads the first n of numpy's output
        np.testing.assert_allclose(smooth(scores, replace(EXACT, round_window_decimals=None)), vera, atol=1e-12)
        centred = smooth(scores, replace(EXACT, short_video="centred", round_window_decimals=None))
        loop = [sum(scores[j] * kernel[i - j + 7] for j in range(n) if 0 <= i - j + 7 < 15) for i in range(n)]
        np.testing.assert_allclose(centred, loop, atol=1e-12)


def test_position_weights_by_hand():
    np.testing.assert_allclose(position_weights(5), np.exp(-0.5 * ((np.arange(5) - 2) / 2) ** 2))
    np.testing.assert_allclose(position_weights(1), [1.0])  # int(1/2) = 0: spread kept at 1, not a division by 0


# ---------------------------------------------------------------------------------- VERA's scripts, transcribed
def _vera_softmax(row):
    e = np.exp(row - np.max(row))
    return e / np.sum(e)


def _vera_smooth(data, size, sigma):
    kernel = np.exp(-np.linspace(-size // 2, size // 2, size) ** 2 / (2 * sigma ** 2))
    return np.convolve(data, kernel / kernel.sum(), mode="same")


def _vera_script(scores, features, n_frames, dataset):
    """compute_auc.py (UCF) / compute_AP_XD_Violence.py (XD) for one video, minus file handling and the XD
    script's truncation of frames to 16-frame feature snippets (a GT convention, not post-processing)."""
    normalized = features / np.linalg.norm(features, axis=1, keepdims=True)
    sims = normalized @ normalized.T
    top_n = int(0.15 * len(scores))
    idx = np.argsort(sims, axis=1)[:, -top_n:]
    top = np.take_along_axis(sims, idx, axis=1)
    refined = [np.dot(_vera_softmax(top[i] * 10), np.array([scores[j] for j in idx[i]])) for i in range(len(scores))]
    smoothed = _vera_smooth(np.array(refined), 15, 10)
    pred = []
    for i in range(len(scores)):
        value = round(smoothed[i], 1) if dataset == "ucf_crime" else smoothed[i]
        pred.extend([value] * (16 if i != len(scores) - 1 else n_frames - 16 * i))
    pred = np.array(pred)
    if dataset == "ucf_crime":
        sigma = int(len(pred) / 2)
        return np.exp(-0.5 * ((np.arange(len(pred)) - int(len(pred) / 2)) / sigma) ** 2) * pred
    return np.array([round(v, 1) for v in 1 / (1 + np.exp(-pred))])


@pytest.mark.parametrize("dataset", ["ucf_crime", "xd_violence"])
@pytest.mark.parametrize("n_frames", [37, 230, 1000])
def test_vera_code_preset_reproduces_vera_scripts(dataset, n_frames):
    rng = np.random.default_rng(n_frames)
    n_windows = -(-n_frames // 16)
    scores = rng.random(n_windows)
    features = rng.normal(size=(n_windows, 32))
    params = PROTOCOLS["vera_code"][dataset][1].params  # the AP recipe: compute_AP_XD_Violence.py on XD
    steps = three_steps(scores, features, n_frames, 16, replace(params, similarity_dtype="float64"))
    np.testing.assert_allclose(steps["step3"], _vera_script(scores, features, n_frames, dataset), atol=1e-9)
    np.testing.assert_allclose(steps["step1"], window_to_frame_scores(scores, n_frames, stride=16))


def test_presets_follow_the_protocol_doc():
    code_ucf, code_xd = PRESETS["vera_code"]["ucf_crime"], PROTOCOLS["vera_code"]["xd_violence"][1].params
    paper_ucf, paper_xd = PRESETS["vera_paper"]["ucf_crime"], PRESETS["vera_paper"]["xd_violence"]
    # the released code: 0.15 h and x10 for both datasets, kernel 15 / 10, position weighting in the UCF script
    for p in (code_ucf, code_xd):
        assert (p.fraction, p.temperature, p.kernel_size, p.kernel_sigma) == (0.15, 10.0, 15, 10.0)
    assert code_ucf.position_weighting and not code_xd.position_weighting
    # the paper: K = 0.1 h on UCF, 0.15 h on XD, tau = 10; kernel 30 / 30 on XD
    assert (paper_ucf.fraction, paper_xd.fraction, paper_ucf.temperature, paper_xd.temperature) == (0.1, 0.15, 10, 10)
    assert (paper_xd.kernel_size, paper_xd.kernel_sigma) == (30, 30.0)
    assert resolve_preset("vera_paper:xd_violence", "synthetic") == ("xd_violence", paper_xd)
    assert resolve_preset("vera_paper", "xd_violence") == ("xd_violence", paper_xd)
    with pytest.raises(EvaluationError, match="unknown dataset 'synth_ucf_A'"):
        resolve_preset("vera_code", "synth_ucf_A")  # a test set name is not a family: never guessed from names
    with pytest.raises(EvaluationError, match="unknown post-processing preset 'vera'"):
        resolve_preset("vera", "ucf_crime")


def test_steps_2_and_3_need_features():
    n = 40
    gt = np.zeros(n, np.uint8)
    gt[10:20] = 1
    videos = [VideoScores("a", 1, np.array([0.1, 0.8, 0.3]), window_to_frame_scores(np.array([0.1, 0.8, 0.3]), n),
                          gt),
              VideoScores("b", 0, np.array([0.2, 0.1]), window_to_frame_scores(np.array([0.2, 0.1]), 20),
                          np.zeros(20, np.uint8))]
    result = evaluate_test_set("ucf_crime", videos, 16, family="ucf_crime")
    assert math.isfinite(result.steps["step1"].auc)
    assert math.isnan(result.steps["step3"].auc) and "keep_features" in result.steps["step3"].undefined["auc"]
    assert result.frame_scores["step2"] is None and "test/ucf_crime/step2/auc" not in result.mlflow_metrics()
