"""The metric options of a preset spec against the rules they name, computed here without the project's code.

* FAR: ``mean(score >= 0.5)`` over the frames of normal videos (pooled), ``>`` instead, and the mean of per-video
  rates; on scores rounded to 0.1, where exactly 0.5 is common and the rules differ.
* macro AUC padded as UBnormal-style evaluation code does per video:
  ``roc_auc_score(np.concatenate(([0], gt, [1])), np.concatenate(([0], pred, [1])))``, then the mean.
* ``norm=float32``: VERA's float32 numpy path (tests/vera_reference.py on float32 features).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from copra_bench.evaluation.assembly import VideoScores
from copra_bench.evaluation.postprocess import retrieval_refine
from copra_bench.evaluation.protocol import EvaluationSettings, evaluate_test_set
from copra_bench.evaluation.recipes import UCF_CODE
from copra_bench.windows import window_to_frame_scores
from tests import vera_reference as vera


def _videos(seed=0, n_videos=24, decimals=1):
    rng = np.random.default_rng(seed)
    videos = []
    for i in range(n_videos):
        n = int(rng.integers(40, 400))
        label = i % 2
        gt = np.zeros(n, np.uint8)
        if label:
            s = int(rng.integers(0, n // 2))
            gt[s:s + n // 3] = 1
        windows = -(-n // 16)
        scores = np.round(rng.random(windows), decimals)
        videos.append(VideoScores(f"v{i}", label, scores, window_to_frame_scores(scores, n), gt, None,
                                  ("Abuse",) if label else ("Normal",)))
    return videos


def _step1(videos, spec):
    return evaluate_test_set("t", videos, 16, EvaluationSettings(spec, bootstrap_samples=0),
                             family="ucf_crime").steps["step1"]


def test_far_rules():
    videos = _videos()
    normal = [v.frame_scores for v in videos if v.label == 0]
    pooled = np.concatenate(normal)
    expected = {"vera_code": np.mean(pooled >= 0.5), "vera_code,far=>": np.mean(pooled > 0.5),
                "vera_code,far_unit=videos": np.mean([np.mean(s >= 0.5) for s in normal]),
                "vera_code,far=>,far_unit=videos": np.mean([np.mean(s > 0.5) for s in normal]),
                "vera_code,far_threshold=0.3": np.mean(pooled >= 0.3)}
    assert expected["vera_code"] != expected["vera_code,far=>"]  # the data has scores of exactly 0.5
    for spec, value in expected.items():
        assert abs(_step1(videos, spec).values["far"] - value) < 1e-12, spec
    assert EvaluationSettings(far_threshold=0.3).protocol_params()["far_rule"].startswith("score >= 0.3")


def test_macro_auc_padding_is_ubnormal_style():
    videos = _videos(1, decimals=2)
    padded = np.mean([roc_auc_score(np.concatenate(([0], v.gt, [1])), np.concatenate(([0], v.frame_scores, [1])))
                      for v in videos])
    skipped = np.mean([roc_auc_score(v.gt, v.frame_scores) for v in videos if 0 < v.gt.sum() < v.gt.size])
    assert abs(_step1(videos, "vera_code,macro_pad=true").values["macro_auc"] - padded) < 1e-12
    assert abs(_step1(videos, "vera_code").values["macro_auc"] - skipped) < 1e-12
    assert "UBnormal" in _step1(videos, "vera_code,macro_pad=true").notes[0]


def test_snippet_cut_applies_to_every_metric_of_the_spec():
    videos = _videos(2)
    kept = [16 * ((v.gt.size - 1) // 16) for v in videos]
    gt = np.concatenate([v.gt[:k] for v, k in zip(videos, kept)])
    pred = np.concatenate([v.frame_scores[:k] for v, k in zip(videos, kept)])
    got = _step1(videos, "vera_code,gt_snippet=16,snippet_rule=minus_one")
    assert abs(got.auc - roc_auc_score(gt, pred)) < 1e-12 and got.num_frames == sum(kept)


@pytest.mark.parametrize("n", [6, 40, 300])
def test_float32_path_matches_vera_in_float32(n):
    rng = np.random.default_rng(n)
    scores = rng.random(n)
    features = rng.normal(size=(n, 32)).astype(np.float32)
    top_n = int(0.15 * n)
    reference = np.array(vera._step2(scores.tolist(), features, top_n))
    ours32 = retrieval_refine(scores, features, replace(UCF_CODE, normalise_dtype="float32"))
    ours64 = retrieval_refine(scores, features, UCF_CODE)  # the default: normalised in float64, then float32
    np.testing.assert_allclose(ours32, reference, atol=1e-6)
    np.testing.assert_allclose(ours64, reference, atol=1e-6)
    # with float64 features VERA's arithmetic is float64: then the default path agrees to 1e-9
    exact = np.array(vera._step2(scores.tolist(), features.astype(np.float64), top_n))
    np.testing.assert_allclose(retrieval_refine(scores, features, replace(UCF_CODE, similarity_dtype="float64")),
                               exact, atol=1e-9)
    assert math.isfinite(float(ours32.sum()))


def test_evaluate_cli_takes_a_spec_with_options_and_names_bad_ones(tmp_path, capsys):
    from copra_bench.cli import main
    from copra_bench.evaluation.assembly import save_scores

    videos = _videos(3)
    rng = np.random.default_rng(3)
    videos = [replace(v, features=rng.normal(size=(v.window_scores.size, 8)).astype(np.float16)) for v in videos]
    path = save_scores(tmp_path / "s.npz", videos, extra={"stride": 16})
    out = tmp_path / "m.json"
    spec = "vera_code:xd_violence,far=>,macro_pad=true,gt_snippet=0"
    assert main(["evaluate", "--run", str(path), "--postprocess", spec, "--bootstrap-samples", "0",
                 "--out", str(out)]) == 0
    assert spec in capsys.readouterr().out
    document = json.loads(out.read_text())
    result = document["test"]["s"]
    assert result["recipes"]["auc"]["script"] == "VERA compute_auc_XD_Violence.py"
    assert result["recipes"]["ap"]["gt_snippet"] == 0 and result["step3"]["dmap_mean"] is not None
    assert main(["evaluate", "--run", str(path), "--dataset", "ucf_crime", "--postprocess", "vera_code,far=<"]) == 2
    assert "far='<'" in capsys.readouterr().err


def test_a_bad_spec_fails_when_the_settings_are_built():
    from copra_bench.errors import EvaluationError

    with pytest.raises(EvaluationError, match="bad option 'colour=red'"):
        EvaluationSettings("vera_code,colour=red")
    p = EvaluationSettings("vera_code,snippet_rule=floor").protocol("xd_violence")
    assert (p.auc.gt_snippet, p.ap.gt_snippet, p.ap.snippet_rule) == (0, 16, "floor")  # only the cutting recipe
