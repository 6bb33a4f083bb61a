"""Faults of writing and tracking results, through the CLI as a user meets them (issue 14): a full disk while a
test writes its results, ``sync`` of a run's local copy after its store went away (or for a run made without one),
``evaluate`` with an empty local scores folder."""

from __future__ import annotations

import errno
import json
import sqlite3
from pathlib import Path

import pytest

from copra_bench.cli import main
from copra_bench.evaluation.assembly import load_scores

from .conftest import small_cross_domain
from .fault_runs import FROZEN, MAIN, QUICK, data_config, run_cli, run_dirs, write_yaml


# ------------------------------------------------------------------------------------------------- disk full
@pytest.mark.slow
def test_a_full_disk_names_the_path_and_keeps_what_was_written(tmp_path, monkeypatch, synth_cache, capsys):
    from copra_bench.tracking import results

    monkeypatch.chdir(tmp_path)
    written = []
    original = results.save_scores

    def fill_up(path, videos, **kwargs):
        if written:  # the second test set: half a file, then the disk is full
            Path(path).write_bytes(b"PK\x03\x04 half")
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        return original(path, videos, **kwargs)

    monkeypatch.setattr(results, "save_scores", fill_up)
    code, text = run_cli(capsys, "test", "--config", MAIN, "--model", FROZEN, "--data",
                      data_config(tmp_path, synth_cache, batch_size=8))
    (run_dir,) = run_dirs(tmp_path)
    assert code == 2 and "Traceback" not in text
    assert f"cannot write {(run_dir / 'scores' / 'synth_ucf_A.npz').absolute()}: No space left on device" in text
    assert "disk is full" in text and "local_dir" in text
    assert [p.name for p in (run_dir / "scores").iterdir()] == ["synth_ucf_B.npz"]  # no half file, no temporary
    assert len(load_scores(run_dir / "scores" / "synth_ucf_B.npz")) == 4 and (run_dir / "config.yaml").is_file()


def test_a_failed_rewrite_leaves_the_previous_file(tmp_path, monkeypatch):
    from copra_bench.errors import OutputWriteError
    from copra_bench.tracking.results import write_text_atomic

    target = write_text_atomic(tmp_path / "metrics.json", '{"good": 1}')

    def half_then_full(tmp):
        tmp.write_text('{"hal')
        raise OSError(errno.ENOSPC, "No space left on device")

    from copra_bench.tracking.results import write_atomic

    with pytest.raises(OutputWriteError, match=f"cannot write {target}: No space left"):
        write_atomic(target, half_then_full)
    assert json.loads(target.read_text()) == {"good": 1} and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


# ------------------------------------------------------------------------------------- sync and evaluate later
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, synth_cache):
    """One short COPRA fit + test whose store is then deleted (the store went away): ``(folder, run dir)``."""
    folder = tmp_path_factory.mktemp("trained_run")
    data = write_yaml(folder / "data.yaml", small_cross_domain(synth_cache, frames_per_window=4, batch_size=1,
                                                            test_batch_size=8))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        assert main(["fit", "--config", MAIN, "--data", data, "--model.init_args.epochs", "1",
                     "--trainer.limit_train_batches", "2", "--trainer.log_every_n_steps", "1", *QUICK]) == 0
    (run_dir,) = run_dirs(folder)
    (folder / "mlflow.db").unlink()
    return folder, run_dir


def _store(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(db)


@pytest.mark.slow
def test_sync_uploads_a_run_whose_store_went_away_once(trained_run, synth_cache, tmp_path, capsys):
    _, run_dir = trained_run
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    code, text = run_cli(capsys, "sync", "--run-dir", str(run_dir), "--tracking-uri", uri)
    assert code == 0 and "synced" in text
    db = _store(tmp_path / "new.db")
    (run_id, name, status, artifact_uri), = db.execute(
        "select run_uuid, name, status, artifact_uri from runs").fetchall()
    # the run's name is in its run.json (the logger writes it); a copy without one is named after its folder
    record = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    assert status == "FINISHED" and name == record.get("run_name", run_dir.name)
    params = dict(db.execute("select key, value from params where run_uuid=?", (run_id,)).fetchall())
    assert params["model.class_path"] == "copra_bench.copra.COPRA" and params["model.init_args.epochs"] == "1"
    history = db.execute("select step from metrics where key='train/lr' order by step").fetchall()
    local = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [s for (s,) in history] == [r["step"] for r in local if r.get("train/lr") is not None]
    assert len(history) > 1
    results = json.loads((run_dir / "metrics.json").read_text())["test"]
    auc = db.execute("select value from metrics where key='test/synth_ucf_B/step1/auc'").fetchall()
    assert auc == [(pytest.approx(results["synth_ucf_B"]["step1"]["auc"]),)]
    artifacts = Path(artifact_uri.replace("file://", ""))
    assert sorted(p.name for p in (artifacts / "scores").iterdir()) == ["synth_ucf_A.npz", "synth_ucf_B.npz"]
    assert (artifacts / "metrics.json").read_bytes() == (run_dir / "metrics.json").read_bytes()
    assert (artifacts / "config.yaml").is_file() and not (artifacts / "checkpoints").exists()

    before = {table: db.execute(f"select count(*) from {table}").fetchone()[0] for table in ("runs", "metrics",
                                                                                             "params", "tags")}
    code, text = run_cli(capsys, "sync", "--run-dir", str(run_dir), "--tracking-uri", uri)
    assert code == 0 and "0 params, 0 metric values, 0 artifacts uploaded" in text
    assert before == {table: db.execute(f"select count(*) from {table}").fetchone()[0] for table in before}

    # What the local copy gained since (logged while the store was unreachable) is all a third sync sends
    metrics_log = (run_dir / "metrics.jsonl").read_text()
    try:
        (run_dir / "metrics.jsonl").write_text(metrics_log + json.dumps({"time": 1.0, "step": 99, "x/late": 0.5})
                                               + "\n")
        (run_dir / "late.txt").write_text("written later\n")
        code, text = run_cli(capsys, "sync", "--run-dir", str(run_dir), "--tracking-uri", uri)
        assert code == 0 and "0 params, 1 metric values, 1 artifacts uploaded" in text
        assert db.execute("select value, step from metrics where key='x/late'").fetchall() == [(0.5, 99)]
        assert (artifacts / "late.txt").read_text() == "written later\n"
    finally:
        (run_dir / "metrics.jsonl").write_text(metrics_log)
        (run_dir / "late.txt").unlink(missing_ok=True)


@pytest.mark.slow
def test_sync_uploads_a_run_made_with_no_store(tmp_path, monkeypatch, synth_cache, capsys):
    monkeypatch.chdir(tmp_path)
    code, _ = run_cli(capsys, "test", "--config", MAIN, "--model", FROZEN, "--data",
                   data_config(tmp_path, synth_cache, batch_size=8),
                   "--trainer.logger", "false", "--trainer.default_root_dir", "outputs/no_store")
    assert code == 0 and not (tmp_path / "mlflow.db").exists()
    run_dir = tmp_path / "outputs" / "no_store"
    code, text = run_cli(capsys, "sync", "--run-dir", str(run_dir))
    assert code == 0 and "synced" in text
    db = _store(tmp_path / "mlflow.db")
    (run_id, status), = db.execute("select run_uuid, status from runs").fetchall()
    assert status == "FINISHED"
    params = dict(db.execute("select key, value from params").fetchall())
    assert params["model.class_path"] == "copra_bench.baselines.FrozenVLM"
    results = json.loads((run_dir / "metrics.json").read_text())["test"]
    auc = dict(db.execute("select key, value from metrics").fetchall())["test/synth_ucf_A/step1/auc"]
    assert auc == pytest.approx(results["synth_ucf_A"]["step1"]["auc"])
    assert main(["evaluate", "--run", run_id, "--bootstrap-samples", "20"]) == 0  # the store's copy is a complete run: evaluate reads it


@pytest.mark.slow
def test_evaluate_reads_the_tracked_copy_when_the_local_scores_folder_is_empty(trained_run, tmp_path,
                                                                               monkeypatch, capsys):
    _, run_dir = trained_run
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["sync", "--run-dir", str(run_dir), "--tracking-uri", uri]) == 0
    run_id = json.loads((run_dir / "sync.json").read_text())[uri]
    capsys.readouterr()
    moved = tmp_path / "scores_moved"
    (run_dir / "scores").rename(moved)
    (run_dir / "scores").mkdir()  # present but empty: a copy in progress, a cleaned scratch disk
    try:
        code, text = run_cli(capsys, "evaluate", "--run", run_id, "--tracking-uri", uri, "--bootstrap-samples", "20")
    finally:
        (run_dir / "scores").rmdir()
        moved.rename(run_dir / "scores")
    results = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert code == 0 and f"{100 * results['synth_ucf_B']['step1']['auc']:7.2f}" in text


def test_sync_takes_name_tags_status_and_params_from_the_loggers_record(tmp_path, capsys):
    """The local record the logger writes (``run.json``, ``params.json``, ``metrics.jsonl``): what sync reads first."""
    run_dir = tmp_path / "outputs" / "3" / "abc123"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({
        "run_id": "abc123", "run_name": "copra-synth_ucf_A_to_synth_ucf_B", "experiment_name": "paper",
        "tracking_uri": f"sqlite:///{tmp_path / 'gone.db'}", "status": "KILLED", "start_time": 1_700_000_000_000,
        "end_time": 1_700_000_360_000, "tags": {"end_reason": "SIGTERM", "config_hash": "f00"}}))
    (run_dir / "params.json").write_text(json.dumps({"model.lr": "0.003", "data.name": "synthA"}))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"time": 1_700_000_000 + s, "step": s, "train/loss": v})
                                                   + "\n" for s, v in ((0, 0.7), (1, 0.6), (2, None)))
                                           + '{"time": 1700000003, "st')  # cut by the kill
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (run_dir / "run.lock").write_text("{}")
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    code, _ = run_cli(capsys, "sync", "--run-dir", str(run_dir), "--tracking-uri", uri)
    assert code == 0
    db = sqlite3.connect(tmp_path / "new.db")
    (name, status, start, end, artifact_uri), = db.execute(
        "select name, status, start_time, end_time, artifact_uri from runs").fetchall()
    assert (name, status, start, end) == ("copra-synth_ucf_A_to_synth_ucf_B", "KILLED", 1_700_000_000_000,
                                          1_700_000_360_000)
    assert db.execute("select name from experiments where experiment_id = (select experiment_id from runs)"
                      ).fetchone() == ("paper",)
    tags = dict(db.execute("select key, value from tags").fetchall())
    assert tags["end_reason"] == "SIGTERM" and tags["synced_from"] == "abc123"
    assert dict(db.execute("select key, value from params").fetchall()) == {"model.lr": "0.003",
                                                                            "data.name": "synthA"}
    assert db.execute("select step, value from metrics order by step").fetchall() == [(0, 0.7), (1, 0.6)]
    assert not Path(artifact_uri.replace("file://", "")).exists()  # checkpoints and the lock stay local

    code, text = run_cli(capsys, "sync", "--run-dir", str(run_dir), "--tracking-uri", uri, "--with-checkpoints")
    assert code == 0 and "0 metric values, 1 artifacts uploaded" in text
    assert (Path(artifact_uri.replace("file://", "")) / "checkpoints" / "last.ckpt").read_bytes() == b"weights"
