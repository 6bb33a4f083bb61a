"""``python -m copra_bench evaluate`` on a finished MLflow run reproduces the logged numbers; other presets go to a
new linked run; run directories and single scores files are evaluated and printed; bad input is named."""

from __future__ import annotations

import json
import sqlite3

import lightning as L
import numpy as np
import pytest
import torch
from copra_bench.datamodules import SyntheticUCFCrimeDataModule

from copra_bench.bench_module import BenchModule
from copra_bench.cli import main
from copra_bench.evaluation.assembly import save_scores
from copra_bench.tracking import MLFlowLogger, RunArtifacts
from copra_bench.vlm import ScoreOutput

pytestmark = pytest.mark.slow  # one real test pass + MLflow store for the module (~25 s on 2 cores)


class MeanColour(BenchModule):
    """A cheap deterministic scorer with per-window features (mean and spread of each colour channel)."""

    method_name = "mean_colour"

    def score_windows(self, frames: torch.Tensor) -> ScoreOutput:
        x = frames.float() / 255.0
        score = x.mean(dim=(1, 2, 3, 4))
        features = torch.cat([x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3))], dim=1)
        return ScoreOutput(p_anomaly=score, logit_margin=torch.logit(score), features=features)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, synth_cache):
    from .conftest import SMALL_WORLD

    tmp = tmp_path_factory.mktemp("evaluate")
    uri = f"sqlite:///{tmp}/mlflow.db"
    logger = MLFlowLogger(experiment_name="eval", tracking_uri=uri, local_dir=str(tmp / "outputs"), run_name="r")
    dm = SyntheticUCFCrimeDataModule(domain="A", **SMALL_WORLD, cache_dir=str(synth_cache), window_seconds=2.0,
                                     frames_per_window=4, batch_size=4)
    model = MeanColour(frames_per_window=4, bootstrap_samples=50)
    trainer = L.Trainer(accelerator="cpu", logger=logger, callbacks=[RunArtifacts()], enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.test(model, datamodule=dm, verbose=False)
    return {"uri": uri, "db": tmp / "mlflow.db", "run_id": logger.run_id, "run_dir": logger.run_dir, "tmp": tmp,
            "datamodule": dm}


def _latest(db, run_id):
    with sqlite3.connect(db) as con:
        return dict(con.execute("select key, value from latest_metrics where run_uuid=?", (run_id,)).fetchall())


def _params(db, run_id):
    with sqlite3.connect(db) as con:
        return dict(con.execute("select key, value from params where run_uuid=?", (run_id,)).fetchall())


def test_run_logs_every_step_and_protocol(finished_run):
    metrics = _latest(finished_run["db"], finished_run["run_id"])
    for step in ("step1", "step2", "step3"):
        for key in ("auc", "ap", "ap_step", "ap_trapz", "macro_auc", "auc_a", "ap_a", "far", "auc_ci_low"):
            assert f"test/synth_ucf_A/{step}/{key}" in metrics, (step, key)
    assert any(k.startswith("test/synth_ucf_A/step1/auc_class/") for k in metrics)
    params = _params(finished_run["db"], finished_run["run_id"])
    assert params["protocol.postprocess"] == "vera_code" and params["protocol.ap_primary"] == "step"
    assert params["protocol.metric_aggregation"] == "micro" and params["protocol.bootstrap_samples"] == "50"
    assert params["protocol.postprocess.synthetic.fraction"] == "0.15"
    data_protocol = getattr(finished_run["datamodule"], "protocol_settings", None)  # the DataModule's choices too
    if data_protocol is not None:
        assert {f"protocol.{k}": str(v) for k, v in data_protocol().items()}.items() <= params.items()
    saved = json.loads((finished_run["run_dir"] / "metrics.json").read_text())
    assert abs(saved["test"]["synth_ucf_A"]["step3"]["auc"] - metrics["test/synth_ucf_A/step3/auc"]) < 1e-6
    assert (finished_run["run_dir"] / "plots" / "synth_ucf_A" / "curves.png").stat().st_size > 1000
    assert (finished_run["run_dir"] / "plots" / "synth_ucf_A" / "timelines.png").is_file()


def test_evaluate_run_id_reproduces_the_logged_numbers(finished_run, capsys):
    before = _latest(finished_run["db"], finished_run["run_id"])
    assert main(["evaluate", "--run", finished_run["run_id"], "--tracking-uri", finished_run["uri"]]) == 0
    assert "logged to the same run" in capsys.readouterr().out
    after = _latest(finished_run["db"], finished_run["run_id"])
    assert set(after) == set(before)
    for key, value in before.items():
        assert abs(after[key] - value) < 1e-6, key


def test_another_preset_goes_to_a_new_linked_run(finished_run, capsys):
    code = main(["evaluate", "--run", finished_run["run_id"], "--tracking-uri", finished_run["uri"],
                 "--postprocess", "vera_paper", "--bootstrap-samples", "0"])
    assert code == 0
    out = capsys.readouterr().out
    assert "new run" in out and "step3" in out
    with sqlite3.connect(finished_run["db"]) as con:
        (new_id,) = con.execute("select run_uuid from tags where key='evaluated_from' and value=?",
                                (finished_run["run_id"],)).fetchone()
    params = _params(finished_run["db"], new_id)
    assert params["protocol.postprocess"] == "vera_paper" and params["protocol.bootstrap_samples"] == "0"
    assert params["protocol.postprocess.synthetic.fraction"] == "0.1"
    assert "test/synth_ucf_A/step3/auc" in _latest(finished_run["db"], new_id)
    # the original run keeps its own protocol
    assert _params(finished_run["db"], finished_run["run_id"])["protocol.postprocess"] == "vera_code"


def test_run_directory_and_scores_file(finished_run, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["evaluate", "--run", str(finished_run["run_dir"]), "--out", str(out)]) == 0
    saved = json.loads((finished_run["run_dir"] / "metrics.json").read_text())["test"]["synth_ucf_A"]
    again = json.loads(out.read_text())["test"]["synth_ucf_A"]
    for step in ("step1", "step2", "step3"):
        for key, value in saved[step].items():
            if isinstance(value, float):
                assert abs(again[step][key] - value) < 1e-9, (step, key)
    scores = finished_run["run_dir"] / "scores" / "synth_ucf_A.npz"
    assert main(["evaluate", "--run", str(scores), "--postprocess", "vera_paper:ucf_crime"]) == 0
    assert "vera_paper:ucf_crime" in capsys.readouterr().out


def test_bad_input_is_named(finished_run, tmp_path, capsys):
    assert main(["evaluate", "--run", "0123456789abcdef", "--tracking-uri", finished_run["uri"]]) == 2
    assert "no MLflow run '0123456789abcdef'" in capsys.readouterr().err
    from copra_bench.evaluation.assembly import load_scores

    videos = load_scores(finished_run["run_dir"] / "scores" / "synth_ucf_A.npz")
    save_scores(tmp_path / "old.npz", videos)  # no meta/stride, as prediction files and old runs
    assert main(["evaluate", "--run", str(tmp_path / "old.npz")]) == 2
    assert "does not record the window stride" in capsys.readouterr().err
    # nor its dataset family: the error names the file and what to pass (never a guess from the name)
    assert main(["evaluate", "--run", str(tmp_path / "old.npz"), "--stride", "16"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'old.npz'} does not record its dataset family" in err and "--dataset" in err
    assert main(["evaluate", "--run", str(tmp_path / "old.npz"), "--stride", "16", "--dataset", "synthetic"]) == 0
    videos[0].gt = np.zeros(videos[0].frame_scores.size + 3, np.uint8)
    save_scores(tmp_path / "bad.npz", videos, extra={"stride": 16, "dataset_family": "synthetic"})
    assert main(["evaluate", "--run", str(tmp_path / "bad.npz")]) == 2
    assert f"bad/{videos[0].name}: {videos[0].frame_scores.size} frame scores but" in capsys.readouterr().err


def test_scores_record_the_family_and_evaluate_writes_what_the_test_pass_wrote(finished_run, tmp_path):
    from copra_bench.evaluation.assembly import load_meta

    scores = finished_run["run_dir"] / "scores" / "synth_ucf_A.npz"
    assert str(load_meta(scores)["dataset_family"]) == "synthetic"
    out = tmp_path / "m.json"
    assert main(["evaluate", "--run", str(finished_run["run_dir"]), "--out", str(out)]) == 0
    saved = json.loads((finished_run["run_dir"] / "metrics.json").read_text())
    again = json.loads(out.read_text())
    # one writer: the same scores give the same document, digit for digit (a test pass adds conventions, timing)
    assert set(again) == {"test", "protocol"} and {"test", "protocol", "conventions", "timing"} == set(saved)
    assert again["test"] == saved["test"] and again["protocol"] == saved["protocol"]
