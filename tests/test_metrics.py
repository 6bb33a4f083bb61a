"""Every metric against sklearn / a naive reference (random, ties, all-normal and single-frame videos), the bootstrap
against a naive resampling loop, bad input, and the checks of the score assembly."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from copra_bench.datamodules.records import VideoRecord
from sklearn.metrics import (
    auc,
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
)

from copra_bench.errors import EvaluationError
from copra_bench.evaluation.assembly import (
    VideoScores,
    WindowScoreCollector,
    concatenate,
    load_scores,
    save_scores,
)
from copra_bench.evaluation.bootstrap import bootstrap_intervals
from copra_bench.evaluation.metrics import (
    SortedFrames,
    curve_metrics,
    per_video_auc,
    video_auc,
)
from copra_bench.evaluation.protocol import EvaluationSettings, evaluate_test_set
from copra_bench.windows import WindowSpec, window_to_frame_scores


def trapz_ap(gt, scores):
    precision, recall, _ = precision_recall_curve(gt, scores)
    return auc(recall, precision)


def _check_curves(gt, scores):
    m = curve_metrics(SortedFrames.build(scores, gt))
    assert abs(m.auc - roc_auc_score(gt, scores)) < 1e-6
    assert abs(m.ap_step - average_precision_score(gt, scores)) < 1e-6
    assert abs(m.ap_trapz - trapz_ap(gt, scores)) < 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_both_ap_equal_sklearn_on_random_scores(seed):
    rng = np.random.default_rng(seed)
    _check_curves((rng.random(5000) < 0.2).astype(np.uint8), rng.random(5000))


@pytest.mark.parametrize("decimals", [0, 1, 2])
def test_auc_and_both_ap_with_ties_equal_sklearn(decimals):
    rng = np.random.default_rng(3 + decimals)
    gt = (rng.random(3000) < 0.3).astype(np.uint8)
    _check_curves(gt, np.round(rng.random(3000), decimals))  # heavy ties, as window scores repeated over 16 frames
    _check_curves(np.array([0, 1, 1, 0]), np.array([0.5, 0.5, 0.5, 0.5]))  # all tied: AUC 0.5 exactly, by ties


def test_single_class_is_undefined_not_half():
    m = curve_metrics(SortedFrames.build(np.random.rand(100), np.zeros(100, dtype=np.uint8)))
    assert math.isnan(m.auc) and math.isnan(m.ap_step) and "all 100 frames are normal" in m.reason
    assert math.isnan(video_auc(np.array([0.2, 0.4]), np.array([1, 1])))
    assert abs(video_auc(np.array([0.2, 0.4, 0.3]), np.array([0, 1, 1])) - 1.0) < 1e-12


def test_per_video_auc_equals_a_loop_over_videos():
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 60, size=30)
    video = np.repeat(np.arange(30), lengths)
    scores, gt = np.round(rng.random(video.size), 1), (rng.random(video.size) < 0.4).astype(int)
    got = per_video_auc(SortedFrames.build(scores, gt, video), 30)
    for v in range(30):
        y, s = gt[video == v], scores[video == v]
        if y.min() == y.max():
            assert math.isnan(got[v])
        else:
            assert abs(got[v] - roc_auc_score(y, s)) < 1e-9


def _random_videos(seed, n_videos=14, max_frames=120, stride=4, single_frame=False, decimals=None):
    """Videos of random length (or one frame each), half abnormal, classes cycling over three names."""
    rng = np.random.default_rng(seed)
    videos = []
    for i in range(n_videos):
        n = 1 if single_frame else int(rng.integers(1, max_frames))
        windows = rng.random(-(-n // stride))
        if decimals is not None:
            windows = np.round(windows, decimals)
        label = i % 2
        gt = np.zeros(n, np.uint8)
        if label:
            gt[int(rng.integers(0, n)):] = 1
        cls = ("Abuse", "Arson", "Fighting")[i % 3] if label else "Normal"
        videos.append(VideoScores(f"v{i}", label, windows, window_to_frame_scores(windows, n, stride=stride), gt,
                                  rng.random((windows.size, 6)).astype(np.float16), classes=(cls,), fps=8.0))
    return videos


def _reference_step1(videos, primary="step"):
    """Every step-1 metric written with sklearn on plain concatenations, no shared code."""
    ap = average_precision_score if primary == "step" else trapz_ap
    s = np.concatenate([v.frame_scores for v in videos])
    y = np.concatenate([v.gt for v in videos])
    abn = [v for v in videos if v.label == 1]
    sa, ya = np.concatenate([v.frame_scores for v in abn]), np.concatenate([v.gt for v in abn])
    per_video = [roc_auc_score(v.gt, v.frame_scores) for v in videos if 0 < v.gt.sum() < v.gt.size]
    normal = np.concatenate([v.frame_scores for v in videos if v.label == 0])
    both = 0 < ya.sum() < ya.size  # single-frame abnormal videos are all anomalous: AUC_A undefined
    ref = {"auc": roc_auc_score(y, s), "ap": ap(y, s), "ap_step": average_precision_score(y, s),
           "ap_trapz": trapz_ap(y, s), "auc_a": roc_auc_score(ya, sa) if both else None,
           "ap_a": ap(ya, sa) if both else None,
           "far": float(np.mean(normal >= 0.5)), "macro_auc": float(np.mean(per_video)) if per_video else None}
    classes = {}
    for cls in ("Abuse", "Arson", "Fighting"):
        members = [v for v in videos if v.classes == (cls,) or v.label == 0]
        yc = np.concatenate([v.gt for v in members])
        if 0 < yc.sum() < yc.size:
            classes[cls] = roc_auc_score(yc, np.concatenate([v.frame_scores for v in members]))
    return ref, classes


@pytest.mark.parametrize(("seed", "single_frame", "decimals", "name"),
                         [(0, False, None, "ucf_crime"), (1, False, 1, "ucf_crime"), (2, True, 1, "synth_ucf_A"),
                          (3, False, 1, "xd_violence")])
def test_every_step1_metric_equals_sklearn(seed, single_frame, decimals, name):
    videos = _random_videos(seed, single_frame=single_frame, decimals=decimals, n_videos=40 if single_frame else 14)
    family = "synthetic" if name.startswith("synth") else name
    # every frame (gt_snippet=0): vera_code's XD AP recipe would cut videos to 16-frame snippets first
    result = evaluate_test_set(name, videos, 4, EvaluationSettings("vera_code,gt_snippet=0", bootstrap_samples=0),
                               family=family)
    step1 = result.steps["step1"]
    ref, classes = _reference_step1(videos, "trapz" if name == "xd_violence" else "step")
    assert result.ap_primary == ("trapz" if name == "xd_violence" else "step")
    for key, value in ref.items():
        if value is None:
            assert math.isnan(step1.values[key]) and key in step1.undefined
        else:
            assert abs(step1.values[key] - value) < 1e-6, key
    assert set(step1.auc_class) == set(classes)
    for cls, value in classes.items():
        assert abs(step1.auc_class[cls] - value) < 1e-6
    assert step1.num_frames == sum(v.gt.size for v in videos)


def test_all_normal_test_set_reports_undefined_with_reasons():
    videos = [v for v in _random_videos(4) if v.label == 0]
    step1 = evaluate_test_set("ucf_crime", videos, 4, family="ucf_crime").steps["step1"]
    assert math.isnan(step1.auc) and "frames are normal" in step1.undefined["auc"]
    assert "abnormal videos only" in step1.undefined["auc_a"] and "macro_auc" in step1.undefined
    assert step1.as_json()["auc"] is None and step1.as_json()["ap"] is None
    assert "auc" not in step1.logged() and 0.0 <= step1.logged()["far"] <= 1.0


@pytest.mark.parametrize(("variant", "block", "exact32"), [("step", 2048, 2 ** 24), ("trapz", 2048, 2 ** 24),
                                                         ("trapz", 3, 1)])
def test_bootstrap_intervals_equal_a_naive_resampling_loop(variant, block, exact32, monkeypatch):
    from copra_bench.evaluation import bootstrap

    monkeypatch.setattr(bootstrap, "GROUP_BLOCK", block)  # many blocks of positive groups
    monkeypatch.setattr(bootstrap, "FLOAT32_EXACT", exact32)  # the float64 path
    videos = _random_videos(6, n_videos=10, decimals=1)
    lengths = [v.gt.size for v in videos]
    frames = SortedFrames.build(np.concatenate([v.frame_scores for v in videos]),
                                np.concatenate([v.gt for v in videos]), np.repeat(np.arange(10), lengths))
    got = bootstrap_intervals(frames, 10, samples=200, seed=7, ap_variant=variant)
    draws = np.random.default_rng(7).integers(0, 10, size=(200, 10))
    aucs, aps = [], []
    for row in draws:
        y = np.concatenate([videos[j].gt for j in row])
        s = np.concatenate([videos[j].frame_scores for j in row])
        if 0 < y.sum() < y.size:
            aucs.append(roc_auc_score(y, s))
            aps.append(average_precision_score(y, s) if variant == "step" else trapz_ap(y, s))
    np.testing.assert_allclose(got.auc, np.percentile(aucs, [2.5, 97.5]), atol=1e-9)
    np.testing.assert_allclose(got.ap, np.percentile(aps, [2.5, 97.5]), atol=1e-9)
    assert got.undefined_samples == 200 - len(aucs)


def test_bad_input_names_videos_and_lengths():
    videos = _random_videos(8)
    videos[3].gt = np.zeros(videos[3].frame_scores.size + 2, np.uint8)
    n = videos[3].frame_scores.size
    with pytest.raises(EvaluationError, match=f"toy/v3: {n} frame scores but {n + 2} ground-truth frames"):
        evaluate_test_set("toy", videos, 4, family="generic")
    videos = _random_videos(8)
    videos[2].window_scores[0] = np.nan
    videos[5].window_scores[-1] = np.inf
    with pytest.raises(EvaluationError, match="NaN or inf scores in 2 videos: v2, v5"):
        evaluate_test_set("toy", videos, 4, family="generic")


def test_scores_file_roundtrip_old_format_and_garbage(tmp_path):
    videos = _random_videos(9, n_videos=3)
    back = load_scores(save_scores(tmp_path / "s.npz", videos, extra={"stride": 4}))
    assert [(v.name, v.classes, v.fps) for v in back] == [(v.name, v.classes, 8.0) for v in videos]
    np.testing.assert_array_equal(back[1].window_scores, videos[1].window_scores)
    old = {"videos": np.array(["a"]), "labels": np.array([1]), "a/window_scores": np.array([0.1, 0.9]),
           "a/frame_scores": np.array([0.1] * 4 + [0.9] * 2, np.float32), "a/gt": np.array([0, 0, 0, 0, 1, 1])}
    np.savez(tmp_path / "old.npz", **old)  # the foundation's format: no classes, fps or format version
    (video,) = load_scores(tmp_path / "old.npz")
    assert video.classes == () and video.fps == 0.0
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(EvaluationError, match="bad.npz: not a readable scores file"):
        load_scores(tmp_path / "bad.npz")


def _test_set(lengths, stride=4):
    records = [VideoRecord(name=f"v{i}", path=None, label=i % 2, num_frames=n, fps=10.0,
                           gt=(np.arange(n) >= n // 2).astype(np.uint8) if i % 2 else np.zeros(n, np.uint8))
               for i, n in enumerate(lengths)]
    return SimpleNamespace(name="toy", records=records, window_spec=WindowSpec(stride=stride))


def test_collector_assembles_windows_arriving_in_any_order(tmp_path):
    ts = _test_set([10, 7])
    col = WindowScoreCollector(ts)
    # video 0 has 3 windows, video 1 has 2; batches mix videos and arrive out of order
    col.add(torch.tensor([1, 0]), torch.tensor([1, 2]), torch.tensor([0.5, 0.3]), torch.ones(2, 4))
    col.add(torch.tensor([0, 1, 0]), torch.tensor([0, 0, 1]), torch.tensor([0.1, 0.9, 0.2]), torch.ones(3, 4))
    videos = col.assemble()
    np.testing.assert_allclose(videos[0].window_scores, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(videos[0].frame_scores, [0.1] * 4 + [0.2] * 4 + [0.3] * 2)
    np.testing.assert_allclose(videos[1].frame_scores, [0.9] * 4 + [0.5] * 3)
    scores, gt = concatenate(videos)
    assert scores.shape == gt.shape == (17,)
    path = save_scores(tmp_path / "s.npz", videos)
    back = load_scores(path)
    assert [v.name for v in back] == ["v0", "v1"]
    np.testing.assert_allclose(back[1].frame_scores, videos[1].frame_scores, atol=1e-7)
    assert back[0].features.shape == (3, 4)


def test_collector_refuses_missing_duplicated_and_nonfinite_windows():
    ts = _test_set([10])
    col = WindowScoreCollector(ts)
    col.add(torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([0.1, 0.2]))
    with pytest.raises(EvaluationError, match="1 of 3 windows have no score"):
        col.assemble()
    col.add(torch.tensor([0, 0]), torch.tensor([2, 2]), torch.tensor([0.1, 0.2]))
    with pytest.raises(EvaluationError, match="scored twice"):
        col.assemble()
    col = WindowScoreCollector(ts)
    col.add(torch.tensor([0, 0, 0]), torch.tensor([0, 1, 2]), torch.tensor([0.1, float("nan"), 0.2]))
    with pytest.raises(EvaluationError, match="NaN or inf scores in 1 videos: v0"):
        col.assemble()


def test_length_mismatch_names_the_video():
    ts = _test_set([10])
    col = WindowScoreCollector(ts)
    col.add(torch.tensor([0, 0, 0]), torch.tensor([0, 1, 2]), torch.tensor([0.1, 0.2, 0.3]))
    videos = col.assemble()
    videos[0].gt = np.zeros(12, np.uint8)
    with pytest.raises(EvaluationError, match="v0: 10 frame scores but 12 ground-truth frames"):
        concatenate(videos)
