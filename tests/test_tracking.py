"""MLflow logger behaviour: fail fast on a bad store, keep a local copy, survive a store that breaks mid-run."""

from __future__ import annotations

import json

import pytest

from copra_bench.errors import TrackingError
from copra_bench.tracking import MLFlowLogger, check_tracking_uri, flatten, format_results_table


def test_bad_stores_fail_fast_with_the_uri(tmp_path, monkeypatch):
    with pytest.raises(TrackingError, match="http://127.0.0.1:9 is unreachable"):
        check_tracking_uri("http://127.0.0.1:9", timeout=2)
    with pytest.raises(TrackingError, match="does not exist or is not writable"):
        check_tracking_uri(f"sqlite:///{tmp_path}/missing/dir/mlflow.db")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(TrackingError, match="maintenance mode"):
        check_tracking_uri(f"file://{tmp_path}/mlruns")
    check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")  # fine


def test_a_store_that_breaks_mid_run_loses_nothing(tmp_path):
    logger = MLFlowLogger(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", local_dir=str(tmp_path / "outputs"),
                          run_name="r")
    logger.start()
    logger.log_metrics({"test/a/auc": 0.75}, step=0)

    def broken(*args, **kwargs):
        raise ConnectionError("tracking server went away")

    logger.experiment.log_batch = broken
    with pytest.warns(UserWarning, match="went away"):
        logger.log_metrics({"test/a/ap": 0.5, "test/b/auc": float("nan")}, step=1)
    logger.log_metrics({"x": 1.0}, step=2)  # warned once, still recorded locally
    lines = [json.loads(line) for line in (logger.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 1, 2]
    assert lines[1]["test/a/ap"] == 0.5 and lines[1]["test/b/auc"] is None


def test_flatten_and_table():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": [{"e": 2}]}) == {"a.b": 1, "a.c": [1, 2], "d.0.e": 2}
    table = format_results_table({"s": {"auc": 0.5, "ap": float("nan"), "num_videos": 2, "num_frames": 10,
                                        "num_anomalous_frames": 5, "notes": ["n"]}})
    assert "50.00" in table and "n/a" in table and "note: n" in table


def test_run_settings_are_public_and_fixed_once_the_run_exists(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    logger = MLFlowLogger(experiment_name="e", tracking_uri=uri, local_dir=str(tmp_path / "outputs"))
    assert (logger.tracking_uri, logger.experiment_name) == (uri, "e")
    assert logger.run_name is None and logger.requested_run_id is None and not logger.run_started
    logger.run_name = "method-dataset"
    logger.start()
    assert logger.run_started and logger.requested_run_id is None
    assert logger.experiment.get_run(logger.run_id).info.run_name == "method-dataset"
    with pytest.raises(RuntimeError, match="already created"):
        logger.run_name = "other"
    with pytest.raises(RuntimeError, match="already logs into"):
        logger.attach_run(logger.run_id)

    again = MLFlowLogger(experiment_name="e", tracking_uri=uri, local_dir=str(tmp_path / "outputs"))
    again.attach_run(logger.run_id)
    assert again.requested_run_id == logger.run_id and not again.run_started
    again.start()
    assert again.run_id == logger.run_id and again.run_dir == logger.run_dir
    given = MLFlowLogger(experiment_name="e", tracking_uri=uri, run_id=logger.run_id)
    assert given.requested_run_id == logger.run_id


def test_tracking_uri_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert MLFlowLogger().tracking_uri == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"


def test_experiment_opens_on_its_runs_in_the_mlflow_ui(tmp_path):
    """MLflow 3's UI opens an experiment without ``mlflow.experimentKind`` on an empty GenAI traces page."""
    from mlflow.tracking import MlflowClient

    from copra_bench.tracking.logger import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    logger = MLFlowLogger(experiment_name="fresh", tracking_uri=uri, local_dir=str(tmp_path / "outputs"), run_name="r")
    logger.start()
    logger.log_metrics({"test/a/auc": 0.75}, step=0)
    client = MlflowClient(uri)
    run = client.get_run(logger.run_id)
    assert client.get_experiment(run.info.experiment_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert EXPERIMENT_KIND == "custom_model_development"
    # an experiment that already says what it is keeps it
    kept = client.create_experiment("genai", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    other = MLFlowLogger(experiment_name="genai", tracking_uri=uri, local_dir=str(tmp_path / "outputs"), run_name="r")
    other.start()
    assert client.get_experiment(kept).tags[EXPERIMENT_KIND_TAG] == "genai_development"
