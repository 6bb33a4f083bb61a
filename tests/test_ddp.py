"""A test pass under DDP (2 CPU processes, gloo) gives exactly the metrics and scores of 1 process: no window is
dropped or scored twice (DistributedSampler padding is the classic bug; WindowDataset deals whole videos to ranks).
Rank 0 alone evaluates and writes; every rank ends with the same logged metrics (broadcast from rank 0)."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
from copra_bench.datamodules import SyntheticUCFCrimeDataModule

from copra_bench.evaluation.assembly import load_scores
from copra_bench.tracking import RunArtifacts

from .conftest import SMALL_WORLD
from .test_evaluate import MeanColour


class EachRanksMetrics(L.Callback):
    """Writes ``rank<r>.json``: the metrics Lightning holds on that rank after the test (and whether that rank has
    the evaluated results: rank 0 only)."""

    def __init__(self, folder) -> None:
        self.folder = folder

    def on_test_end(self, trainer, pl_module) -> None:
        record = {"metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
                  "has_results": bool(pl_module.test_results)}
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def _test_pass(root, synth_cache, **trainer_args):
    # 5 test videos: an odd count, so the ranks get different numbers of videos and windows
    world = {**SMALL_WORLD, "num_test_normal": 3}
    dm = SyntheticUCFCrimeDataModule(domain="A", **world, cache_dir=str(synth_cache), window_seconds=2.0,
                                     frames_per_window=4, batch_size=3)
    model = MeanColour(frames_per_window=4, bootstrap_samples=100)
    root.mkdir(parents=True, exist_ok=True)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(root),
                        callbacks=[RunArtifacts(), EachRanksMetrics(root)],
                        **trainer_args)
    trainer.test(model, datamodule=dm, verbose=False)
    metrics = json.loads((root / "metrics.json").read_text())["test"]
    return metrics, load_scores(root / "scores" / "synth_ucf_A.npz"), dict(trainer.callback_metrics)


@pytest.mark.slow
def test_two_processes_give_exactly_the_metrics_of_one(tmp_path, synth_cache):
    single, single_videos, single_logged = _test_pass(tmp_path / "one", synth_cache, devices=1)
    double, double_videos, double_logged = _test_pass(tmp_path / "two", synth_cache, devices=2,
                                                      strategy="ddp_spawn")
    assert double == single  # every metric of every step, bootstrap intervals included, bit for bit
    assert [v.name for v in double_videos] == [v.name for v in single_videos]
    for a, b in zip(double_videos, single_videos, strict=True):
        np.testing.assert_array_equal(a.window_scores, b.window_scores)
        np.testing.assert_array_equal(a.features, b.features)
    assert set(double_logged) == set(single_logged) and "test/synth_ucf_A/step3/auc" in double_logged
    for key, value in single_logged.items():
        assert float(double_logged[key]) == float(value), key
    ranks = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["metrics"] == ranks[1]["metrics"] == {k: float(v) for k, v in single_logged.items()}
    assert [r["has_results"] for r in ranks] == [True, False]  # rank 1 ran no evaluation
