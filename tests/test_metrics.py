"""Frame metrics against sklearn, and the checks of the score assembly."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from copra_bench.datamodules.records import VideoRecord
from copra_bench.errors import EvaluationError
from copra_bench.evaluation.assembly import WindowScoreCollector, concatenate, load_scores, save_scores
from copra_bench.evaluation.metrics import frame_metrics, video_auc
from copra_bench.windows import WindowSpec


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_ap_equal_sklearn_on_random_scores(seed):
    rng = np.random.default_rng(seed)
    gt = (rng.random(5000) < 0.2).astype(np.uint8)
    scores = rng.random(5000)
    m = frame_metrics(scores, gt)
    assert abs(m.auc - roc_auc_score(gt, scores)) < 1e-6
    assert abs(m.ap - average_precision_score(gt, scores)) < 1e-6


def test_auc_ap_with_ties_equal_sklearn():
    rng = np.random.default_rng(3)
    gt = (rng.random(3000) < 0.3).astype(np.uint8)
    scores = np.round(rng.random(3000), 1)  # heavy ties, as window scores repeated over 16 frames
    m = frame_metrics(scores, gt)
    assert abs(m.auc - roc_auc_score(gt, scores)) < 1e-6
    assert abs(m.ap - average_precision_score(gt, scores)) < 1e-6


def test_single_class_is_undefined_not_half():
    m = frame_metrics(np.random.rand(100), np.zeros(100, dtype=np.uint8))
    assert math.isnan(m.auc) and math.isnan(m.ap) and "undefined" in m.notes[0]
    assert math.isnan(video_auc(np.array([0.2, 0.4]), np.array([1, 1])))


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
