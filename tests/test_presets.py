"""Each preset against the reference script it is named after, on the full-size real test sets shipped with the
package (UCF-Crime: 290 videos, 1,111,808 frames from VERA's ``UCF_Eval.json``; XD-Violence: 800 videos, 2,335,801
frames from VERA's ``xd_test_800.json``), with random window scores and float32 features (ImageBind's dtype).

References: VERA's three scripts (tests/vera_reference.py, vera-framework/VERA @ fd17c0ff); VadCLIP ``src/ucf_test.py``
/ ``xd_test.py`` ``test`` (``roc_auc_score`` / ``average_precision_score`` on ``np.repeat(prob, 16)`` against the
snippet-length GT of ``list/make_gt_ucf.py``: ``gt_vec[:-clip_len]`` of ``(snippets + 1) * 16`` frames); RTFM
``test.py`` ``test`` (``roc_curve`` + ``auc``, ``precision_recall_curve`` + ``auc(recall, precision)``); LAVAD
``src/eval.py`` ``main`` (the same two sklearn calls over every frame, ``video_scores[: video.num_frames]``).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from copra_bench.datamodules.records import intervals_to_gt
from sklearn.metrics import average_precision_score, roc_auc_score

from copra_bench.errors import EvaluationError
from copra_bench.evaluation.assembly import VideoScores
from copra_bench.evaluation.protocol import (
    EvaluationSettings,
    _all_steps,
    evaluate_test_set,
    protocol_params,
    step_metrics,
)
from copra_bench.evaluation.recipes import PROTOCOLS, resolve_protocol
from copra_bench.windows import window_to_frame_scores
from tests import vera_reference as vera

FLOAT32 = 1e-6  # the references' own dtype for features is float32 (near-tie neighbours may differ)


def _videos(entries, seed):
    """Real names, lengths and VERA's intervals; random scores (mildly informative) and float32 features."""
    rng = np.random.default_rng(seed)
    videos = []
    for e in entries:
        name, n = e["video"].rsplit("/", 1)[-1].removesuffix(".mp4"), e["length"]
        labels = e["temporal_label"]
        pairs = [(s, t) for s, t in zip(labels[0::2], labels[1::2]) if s != -1]
        gt = intervals_to_gt(pairs, n, video=name) if pairs else np.zeros(n, np.uint8)
        windows = -(-n // 16)
        starts = np.arange(0, n, 16)  # each 16-frame window's mean GT (sums of 0/1: exact)
        window_gt = np.add.reduceat(gt, starts, dtype=np.float64) / np.diff(np.append(starts, n))
        scores = np.clip(0.35 * window_gt + 0.65 * rng.random(windows), 0, 1)
        features = rng.normal(size=(windows, 16)).astype(np.float32)
        videos.append(VideoScores(name, int(bool(pairs)), scores, window_to_frame_scores(scores, n), gt, features,
                                  ("Anomaly",) if pairs else ("Normal",)))
    return videos


@pytest.fixture(scope="module")
def ucf(real_dir):
    return _videos(json.loads((real_dir / "ucf_crime" / "UCF_Eval.json").read_text()), 0)


@pytest.fixture(scope="module")
def xd(real_dir):
    return _videos(json.loads((real_dir / "xd_violence" / "xd_test_800.json").read_text()), 1)


def _evaluate(videos, spec, family):
    return evaluate_test_set(family, videos, 16, EvaluationSettings(spec, bootstrap_samples=0), family=family)


def _step3(videos, spec, family):
    """Step 3's metrics of a preset (what evaluate_test_set does, without Steps 1-2's metrics)."""
    settings = EvaluationSettings(spec, bootstrap_samples=0)
    protocol = settings.protocol(family)
    auc = _all_steps(family, videos, 16, protocol.auc.params)["step3"]
    ap = None if protocol.ap.params == protocol.auc.params else _all_steps(family, videos, 16,
                                                                           protocol.ap.params)["step3"]
    return step_metrics(auc, videos, ap_primary=protocol.ap_primary, settings=settings, ap_scores=ap,
                        protocol=protocol, sigmoid_scores=protocol.auc.params.sigmoid)


def test_the_fixtures_are_the_full_size_test_sets(ucf, xd, real_dir):
    assert (len(ucf), sum(v.gt.size for v in ucf)) == (290, 1_111_808)
    assert (len(xd), sum(v.gt.size for v in xd)) == (800, 2_335_801)
    entries = json.loads((real_dir / "ucf_crime" / "UCF_Eval.json").read_text())
    for v, e in zip(ucf[:40], entries[:40]):  # intervals_to_gt is the scripts' ground truth
        assert v.gt.tolist() == vera.vera_gt(e["temporal_label"], e["length"])


FULL_AND_PART = [pytest.param(1, marks=pytest.mark.slow, id="full-size"), pytest.param(6, id="every-6th-video")]


@pytest.mark.parametrize("every", FULL_AND_PART)
def test_vera_code_on_ucf_crime_is_compute_auc_py(ucf, every):
    ucf = ucf[::every]
    pred, gt = [], []
    for v in ucf:
        pred.extend(vera.compute_auc_video(v.window_scores, v.features, v.gt.size))
        gt.extend(v.gt.tolist())
    reference = vera.script_auc(gt, pred)
    for spec in ("vera_code", "vera_code,norm=float32"):
        got = _step3(ucf, spec, "ucf_crime")
        assert abs(got.auc - reference) < FLOAT32, spec
        print(f"UCF AUC: VERA {reference:.12f}, {spec} {got.auc:.12f}")
    assert PROTOCOLS["vera_compute_auc"]["ucf_crime"] == PROTOCOLS["vera_code"]["ucf_crime"]


@pytest.mark.parametrize("every", FULL_AND_PART)
def test_vera_code_on_xd_violence_takes_auc_and_ap_from_their_own_scripts(xd, every):
    xd = xd[::every]
    pred_auc, pred_ap, gt_auc, gt_ap = [], [], [], []
    for v in xd:
        pred_auc.extend(vera.compute_auc_xd_video(v.window_scores, v.features, v.gt.size))
        gt_auc.extend(v.gt.tolist())
        p, g = vera.compute_ap_xd_video(v.window_scores, v.features, v.gt.size, v.gt.tolist())
        pred_ap.extend(p)
        gt_ap.extend(g)
    auc_ref, ap_ref = vera.script_auc(gt_auc, pred_auc), vera.script_ap(gt_ap, pred_ap)
    assert len(gt_ap) == sum(16 * ((v.gt.size - 1) // 16) for v in xd)  # the script's cut
    step3 = _step3(xd, "vera_code", "xd_violence")
    assert abs(step3.auc - auc_ref) < FLOAT32 and abs(step3.ap - ap_ref) < FLOAT32
    assert np.isfinite(step3.values["far"])  # FAR under the AUC recipe: no sigmoid
    # the single-script presets are each recipe alone; the AP script's Step 3 is not VERA's XD AUC (the old bug)
    auc_recipe, ap_recipe = PROTOCOLS["vera_code"]["xd_violence"]
    assert PROTOCOLS["vera_compute_auc_xd"]["xd_violence"] == (auc_recipe, auc_recipe)
    assert PROTOCOLS["vera_compute_ap_xd"]["xd_violence"] == (ap_recipe, ap_recipe)
    assert abs(vera.script_auc(gt_ap, pred_ap) - auc_ref) > 1e-3
    got = _evaluate(xd[:30], "vera_code", "xd_violence")  # what the run records
    assert got.steps["step3"].values["ap"] == got.steps["step3"].values["ap_trapz"]
    params = protocol_params([got], got.settings)
    assert params["postprocess.xd_violence.auc_recipe"] == "VERA compute_auc_XD_Violence.py"
    assert params["postprocess.xd_violence.ap_recipe"] == "VERA compute_AP_XD_Violence.py"
    assert params["postprocess.xd_violence.ap_gt_snippet"] == "16 (minus_one)"
    assert params["postprocess.xd_violence.all_windows_up_to"] == 10 and params["postprocess.xd_violence.ap.sigmoid"]
    print(f"XD ({len(xd)} videos): AUC VERA {auc_ref:.12f} ours {step3.auc:.12f}; AP VERA {ap_ref:.12f} ours {step3.ap:.12f}")


def _snippet_reference(videos, ap_fn, rule):
    """VadCLIP / RTFM: snippet scores repeated 16 times against a GT of whole snippets."""
    pred, gt = [], []
    for v in videos:
        usable = v.gt.size - 1 if rule == "minus_one" else v.gt.size
        snippets = usable // 16
        pred.extend(np.repeat(v.window_scores[:snippets], 16))
        gt.extend(v.gt[:16 * snippets])
    return roc_auc_score(gt, pred), ap_fn(gt, pred)


@pytest.mark.parametrize("every", FULL_AND_PART)
@pytest.mark.parametrize("family", ["ucf_crime", "xd_violence"])
def test_vadclip_rtfm_and_lavad_presets_score_the_methods_own_scores_as_their_code(ucf, xd, family, every):
    videos = [replace(v, features=None) for v in (ucf if family == "ucf_crime" else xd)[::every]]  # Step 1 only
    for spec, ap_fn, rule in (("vadclip", average_precision_score, "floor"),
                              ("rtfm", vera.script_ap, "minus_one" if family == "xd_violence" else "floor")):
        auc_ref, ap_ref = _snippet_reference(videos, ap_fn, rule)
        step1 = _evaluate(videos, spec, family).steps["step1"]
        assert abs(step1.auc - auc_ref) < 1e-9 and abs(step1.ap - ap_ref) < 1e-9, spec
    lavad = _evaluate(videos, "lavad", family).steps["step1"]
    pred = np.concatenate([np.repeat(v.window_scores, 16)[:v.gt.size] for v in videos])
    gt = np.concatenate([v.gt for v in videos])
    assert abs(lavad.auc - vera.script_auc(gt, pred)) < 1e-9 and abs(lavad.ap - vera.script_ap(gt, pred)) < 1e-9


def test_options_parse_record_and_refuse_bad_values():
    p = resolve_protocol("vera_code:xd_violence,gt_snippet=16,far=>,far_unit=videos,macro_pad=true,norm=float32",
                         "ucf_crime")
    assert p.family == "xd_violence" and p.auc.gt_snippet == p.ap.gt_snippet == 16
    assert p.auc.snippet_rule == "minus_one" and p.auc.params.normalise_dtype == "float32"
    assert (p.options.far_compare, p.options.far_unit, p.options.macro_pad) == (">", "videos", True)
    assert resolve_protocol("vera_code,gt_snippet=0", "xd_violence").ap.gt_snippet == 0
    assert resolve_protocol("vera_code,gt_snippet=16,snippet_rule=floor", "xd_violence").ap.kept_frames(33) == 32
    assert resolve_protocol("vera_code", "xd_violence").ap.kept_frames(33) == 32
    assert resolve_protocol("vera_code", "xd_violence").ap.kept_frames(32) == 16
    settings = EvaluationSettings("vera_code,far=>,far_unit=videos,macro_pad=true")
    recorded = settings.protocol_params()
    assert recorded["far_rule"] == "score > 0.5, mean over normal videos" and "UBnormal" in recorded["macro_auc"]
    assert EvaluationSettings().protocol_params()["far_rule"] == "score >= 0.5, pooled over all frames of normal videos"
    for bad, match in (("vera_code,far=<", "far='<'"), ("vera_code,gt_snippet=x", "not a number"),
                       ("vera_code,colour=red", "bad option 'colour=red'"), ("vera", "unknown post-processing preset"),
                       ("vera_code:ucf", "unknown dataset 'ucf'")):
        with pytest.raises(EvaluationError, match=match):
            resolve_protocol(bad, "ucf_crime")
