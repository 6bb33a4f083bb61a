"""``sweep --status``: each point's state from the store and the claims (queued, running with host / PID / step,
stale, finished with its AUC, failed with the reason), a summary line, and a clear message for a missing store."""

from __future__ import annotations

import subprocess
import sys

from copra_bench.cli import main
from copra_bench.sweep.plan import prepare
from copra_bench.sweep.spec import SweepSpec
from copra_bench.sweep.store import SweepStore

from .conftest import REPO
from .sweep_fakes import fake_launcher, sweep_file

MAIN = str(REPO / "configs" / "cross_domain.yaml")


def test_a_missing_store_is_a_clear_message(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = sweep_file(tmp_path, [0, 1], launcher=fake_launcher(tmp_path, monkeypatch), configs=[MAIN])
    assert main(["sweep", "--config", str(path), "--status"]) == 2
    err = capsys.readouterr().err
    assert f"the MLflow store sqlite:///{tmp_path / 'mlflow.db'} does not exist" in err and "2 points, none" in err
    assert not (tmp_path / "mlflow.db").exists()


def test_each_point_has_its_state_and_the_summary_counts_them(tmp_path, monkeypatch, capsys):
    """Seeds 0-4: 0 finished (its AUC shown), 1 failed (the reason), 2 running in another live process (host, PID,
    the step and epoch it logged), 3 RUNNING with nobody holding it (stale), 4 queued."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_FAIL_SEED", "1")
    path = sweep_file(tmp_path, range(5), launcher=fake_launcher(tmp_path, monkeypatch, seconds=0.1), configs=[MAIN])
    assert main(["sweep", "--config", str(path), "--max-runs", "2"]) == 1
    spec = SweepSpec.load(path)
    runs = prepare(spec)
    store = SweepStore(f"sqlite:///{tmp_path / 'mlflow.db'}", "copra_bench")
    first = store.finished_hashes("t")[runs[0].config_hash]
    store.client.log_metric(first, "test/synth_ucf_B/step1/auc", 0.8125)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from copra_bench.sweep.plan import run_tags

        running = store.create_run("t-002", run_tags(spec, runs[2]))
        store.client.log_metric(running, "epoch", 1.0, step=7)
        claim = store.claim(runs[2].config_hash, tmp_path)
        claim.path.write_text(f'{{"pid": {holder.pid}, "host": "{__import__("socket").gethostname()}", '
                              '"job_id": "4242_2", "index": 2}')
        store.create_run("t-003", run_tags(spec, runs[3]))  # RUNNING, no claim: its process died
        capsys.readouterr()
        assert main(["sweep", "--config", str(path), "--status"]) == 0
        lines = capsys.readouterr().out.splitlines()
    finally:
        holder.kill()
    state = {line.split("]")[0].strip(" ["): line for line in lines if line.startswith("  [")}
    assert "finished" in state["0"] and "synth_ucf_B/step1/auc=0.8125" in state["0"]
    assert "failed" in state["1"] and "exit status 3" in state["1"]
    assert "running" in state["2"] and f"PID {holder.pid}" in state["2"] and "job 4242_2" in state["2"]
    assert "step 7 epoch 1" in state["2"]
    assert "stale" in state["3"] and "rerun the sweep" in state["3"]
    assert "queued" in state["4"] and "no run yet" in state["4"]
    assert lines[-1] == "sweep t: 5 points: 1 finished, 1 running, 1 queued, 1 stale, 1 failed"
