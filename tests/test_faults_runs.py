"""Faults as a cluster makes them, on the tiny default (COPRA, batch 1, 8 steps, ``last.ckpt`` every 2 steps): real
``python -m copra_bench`` processes killed with SIGKILL / SIGTERM, run twice at once, or losing their tracking store.
Each test asserts the good outcome: the same numbers, the right status, the right exit code, nothing lost
(docs/reliability.md lists them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from copra_bench.tracking.run_lock import pid_alive

from .conftest import copy_empty_store
from .faults import (
    CLI,
    MAIN,
    MAX_STEPS,
    assert_same_run,
    db_repeated_steps,
    db_runs,
    db_tags,
    kill,
    logged_steps,
    only_run_dir,
    results_of,
    run,
    run_json,
    start,
    train_metrics,
    train_metrics_lines,
    wait_for,
    write_job,
)

pytestmark = pytest.mark.slow

#: A stand-in for a run in the two-sweeps test: records its seed, takes 3 s, logs one metric, exits 0.
FAKE_RUN = r'''
import os, sys, time
args = sys.argv[1:]
value = lambda key: args[args.index(key) + 1]
with open("calls.txt", "a") as fh:
    fh.write(value("--seed_everything") + "\n")
time.sleep(3)
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
from mlflow.tracking import MlflowClient
MlflowClient(value("--trainer.logger.init_args.tracking_uri")).log_metric(
    value("--trainer.logger.init_args.run_id"), "test/fake/step1/auc", 0.5)
'''


@pytest.fixture()
def store(tmp_path, empty_store) -> Path:
    """``tmp_path/mlflow.db``, the runs' store (the config's ``sqlite:///mlflow.db``), already created."""
    return copy_empty_store(empty_store, tmp_path / "mlflow.db")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, synth_cache, empty_store):
    """An uninterrupted run: (its working directory, its run directory)."""
    cwd = tmp_path_factory.mktemp("reference")
    copy_empty_store(empty_store, cwd / "mlflow.db")
    code, log = run([*CLI, *write_job(cwd, synth_cache)], cwd)
    assert code == 0, log[-3000:]
    return cwd, only_run_dir(cwd)


def _kill_9(process, cwd: Path) -> tuple[str, int]:
    """SIGKILL ``process``: the MLflow run is left RUNNING; (its id, the step its last.ckpt holds)."""
    assert kill(process) == -signal.SIGKILL
    (run_id, status), = db_runs(cwd)
    assert status == "RUNNING", "a killed run is not finished"
    checkpoint = only_run_dir(cwd) / "checkpoints" / "last.ckpt"
    return run_id, torch.load(checkpoint, weights_only=False)["global_step"]


def _restored(cwd: Path, name: str) -> bool:
    checkpoint = only_run_dir(cwd) / "checkpoints" / "last.ckpt"
    log = cwd / f"{name}.log"
    return log.is_file() and f"Restored all states from the checkpoint at {checkpoint}" in log.read_text()


def test_kill_9_at_a_checkpoint_between_checkpoints_and_during_the_test_then_resume_equals_an_uninterrupted_run(
        tmp_path, synth_cache, store, reference):
    """One run SIGKILLed three times, each time continued with ``fit --ckpt_path last``: right after its first
    checkpoint (mid-epoch); at step 5 (checkpoint 4 is the epoch boundary: step 4 is redone); after training, during
    the test (RUNNING, tagged training=finished: the resume trains no step again and writes the test). Each resume
    restores last.ckpt and continues the same MLflow run; at the end it is FINISHED with the same per-step metrics,
    final weights and test metrics as an uninterrupted run, and each step is logged once (locally and in MLflow)."""
    argv = [*CLI, *write_job(tmp_path, synth_cache)]
    resume = [*argv, "--ckpt_path", "last"]
    process = start(argv, tmp_path)
    wait_for(lambda: list(tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")), process, what="a checkpoint")
    run_id, saved_at = _kill_9(process, tmp_path)
    assert saved_at > 0

    process = start(resume, tmp_path, "resume1")  # killed between checkpoints
    wait_for(lambda: _restored(tmp_path, "resume1") and logged_steps(tmp_path) >= 5, process,
             what="the restore, then step 5")
    assert _kill_9(process, tmp_path)[0] == run_id

    process = start(resume, tmp_path, "resume2")  # killed during the test
    wait_for(lambda: run_json(only_run_dir(tmp_path)).get("tags", {}).get("training") == "finished", process,
             what="the end of training")
    assert _kill_9(process, tmp_path)[0] == run_id
    assert _restored(tmp_path, "resume2"), (tmp_path / "resume2.log").read_text()[-3000:]
    assert db_tags(tmp_path, run_id)["training"] == "finished"
    assert not (only_run_dir(tmp_path) / "metrics.json").exists()
    trained_lines = len(train_metrics_lines(tmp_path))

    code, log = run(resume, tmp_path, "resume3")
    assert code == 0, log[-3000:]
    assert _restored(tmp_path, "resume3")
    assert len(train_metrics_lines(tmp_path)) == trained_lines == MAX_STEPS, "no step is trained again"
    assert db_runs(tmp_path) == [(run_id, "FINISHED")]
    assert db_repeated_steps(tmp_path, run_id) == []
    assert_same_run(only_run_dir(tmp_path), reference[1], tmp_path, reference[0])


def test_second_process_on_a_live_run_is_refused_and_sigterm_stops_at_a_checkpoint(tmp_path, synth_cache, store,
                                                                                    reference):
    """``fit --ckpt_path last`` while the same config trains: an error naming the PID and host, the live run
    untouched. SIGTERM to the training process: last.ckpt written at the step it stopped, run KILLED with the reason,
    exit 143; resuming it gives the uninterrupted run's numbers."""
    argv = [*CLI, *write_job(tmp_path, synth_cache)]
    process = start(argv, tmp_path)
    wait_for(lambda: logged_steps(tmp_path) >= 1, process, what="training")
    process.send_signal(signal.SIGSTOP)  # suspended (alive) while the second process starts: it must not finish first
    try:
        code, log = run([*argv, "--ckpt_path", "last"], tmp_path, "second")
    finally:
        process.send_signal(signal.SIGCONT)
    assert code == 2, log[-3000:]
    assert f"PID {process.pid} on host" in log and "Traceback" not in log
    assert process.poll() is None, "the live run goes on"

    assert kill(process, signal.SIGTERM) == 143
    run_dir = only_run_dir(tmp_path)
    (run_id, status), = db_runs(tmp_path)
    assert status == "KILLED"
    assert "SIGTERM" in db_tags(tmp_path, run_id)["end_reason"]
    stopped_at = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert stopped_at == logged_steps(tmp_path) + 1, "last.ckpt holds the step the run stopped after"
    assert not (run_dir / "run.lock").exists()

    code, log = run([*argv, "--ckpt_path", "last"], tmp_path, "resume")
    assert code == 0, log[-3000:]
    assert db_runs(tmp_path) == [(run_id, "FINISHED")]
    assert_same_run(run_dir, reference[1], tmp_path, reference[0])


def _break_store(db, how: str) -> None:
    if how == "deleted":
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), db.with_name(db.name +
                                                                                                      "-journal")):
            path.unlink(missing_ok=True)
    elif os.geteuid() == 0:  # root ignores file modes: make the file immutable instead
        subprocess.run(["chattr", "+i", str(db)], check=True)
    else:
        db.chmod(0o444)


@pytest.mark.parametrize("how", ["deleted", "read_only"])
def test_a_store_lost_mid_run_costs_one_warning_and_nothing_else(tmp_path, synth_cache, store, reference, how):
    """The sqlite store deleted or made read-only at step 2: training and test go on, exit 0, one warning when it
    fails and one at the end (how to upload the local copy), no traceback; the local copy has the uninterrupted run's
    numbers and everything ``sync`` needs (run.json with status and tags, params.json, metrics.jsonl, results)."""
    argv = [*CLI, *write_job(tmp_path, synth_cache)]
    process = start(argv, tmp_path)
    wait_for(lambda: logged_steps(tmp_path) >= 2, process, what="step 2")
    db = tmp_path / "mlflow.db"
    _break_store(db, how)
    try:
        assert process.wait(timeout=300) == 0, (tmp_path / "run.log").read_text()[-3000:]
    finally:
        if how == "read_only" and os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(db)], check=True)
    log = (tmp_path / "run.log").read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    assert log.count("continuing without the store") == 1 and log.count("copra_bench sync --run-dir") == 1
    run_dir = only_run_dir(tmp_path)
    record = run_json(run_dir)
    assert record["status"] == "FINISHED" and record["upload_failed"] is True
    assert record["tags"]["training"] == "finished" and record["tags"]["method"] == "copra"
    assert (run_dir / "params.json").is_file() and (run_dir / "config.yaml").is_file()
    assert sorted(p.name for p in (run_dir / "scores").iterdir()) == ["synth_ucf_B.npz"]
    assert results_of(run_dir) == results_of(reference[1])
    assert len(train_metrics(tmp_path)) == MAX_STEPS


def _sweep_file(tmp_path, synth_cache, seeds=(0, 1), launcher=None) -> str:
    job = write_job(tmp_path, synth_cache)
    raw = {"sweep": "faults", "configs": [MAIN],
           "set": {"data": job[job.index("--data") + 1], "trainer": job[job.index("--trainer") + 1],
                   "model.init_args.epochs": 100, "model.init_args.bootstrap_samples": 50,
                   "trainer.logger.init_args.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                   "trainer.logger.init_args.local_dir": str(tmp_path / "outputs")},
           "grid": {"seed_everything": list(seeds)}}
    if launcher:
        raw["launcher"] = launcher
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def _lock_pid(cwd) -> int:
    locks = list(cwd.glob("outputs/*/*/run.lock"))
    return json.loads(locks[0].read_text())["pid"] if locks and locks[0].read_text() else 0


def _gone(pid: int, timeout: float = 60) -> bool:
    try:
        wait_for(lambda: not pid_alive(pid) or _zombie(pid), timeout=timeout, what=f"PID {pid} to end")
    except AssertionError:
        return False
    return True


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_sigterm_to_a_sweep_stops_its_children_and_reports_them_not_finished(tmp_path, synth_cache, store):
    """SIGTERM to the sweep while its first run trains: the child gets SIGTERM, writes last.ckpt and ends KILLED
    (reason tagged), the second run never starts, the sweep says the run is not finished and exits 143."""
    sweep = start([*CLI, "sweep", "--config", _sweep_file(tmp_path, synth_cache)], tmp_path, "sweep")
    wait_for(lambda: logged_steps(tmp_path) >= 1, sweep, what="the first run's training")
    child = _lock_pid(tmp_path)
    assert kill(sweep, signal.SIGTERM, timeout=200) == 143
    output = (tmp_path / "sweep.log").read_text()
    assert "not finished" in output and "0 finished" in output, output[-3000:]
    assert _gone(child, timeout=5)
    (run_id, status), = db_runs(tmp_path)
    tags = db_tags(tmp_path, run_id)
    assert status == "KILLED" and "SIGTERM" in tags["end_reason"] and "sweep stopped" in tags["sweep.error"]
    assert (only_run_dir(tmp_path) / "checkpoints" / "last.ckpt").is_file()


def test_two_sweep_processes_on_one_file_run_each_point_once(tmp_path, synth_cache):
    """Two ``sweep`` processes started together on one sweep file (a fake run that takes 3 s): every grid point runs
    once, in one of them; both exit 0; the store holds one FINISHED run per point."""
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)
    sweep_file = _sweep_file(tmp_path, synth_cache, seeds=(0, 1, 2), launcher=[sys.executable, str(script)])
    first = start([*CLI, "sweep", "--config", sweep_file], tmp_path, "first")
    second = start([*CLI, "sweep", "--config", sweep_file], tmp_path, "second")
    assert first.wait(timeout=300) == 0 and second.wait(timeout=300) == 0
    calls = sorted((tmp_path / "calls.txt").read_text().split())
    assert calls == ["0", "1", "2"], calls
    runs = db_runs(tmp_path)
    assert sorted(status for _, status in runs) == ["FINISHED"] * 3
    assert len({db_tags(tmp_path, run_id)["sweep.config_hash"] for run_id, _ in runs}) == 3


def test_a_sweep_child_killed_by_sigkill_leaves_its_run_unfinished_and_no_orphan(tmp_path, synth_cache, store):
    """The sweep's child (a wrapper shell around the run, as a cluster launcher would be) is SIGKILLed: the sweep
    kills what was left in its process group (the run itself: no orphan goes on), marks the run KILLED with the
    reason, and exits 1."""
    launcher = ["sh", "-c", '"$@"; exit $?', "sh", *CLI]
    sweep = start([*CLI, "sweep", "--config", _sweep_file(tmp_path, synth_cache, seeds=(0,), launcher=launcher)],
                  tmp_path, "sweep")
    wait_for(lambda: logged_steps(tmp_path) >= 1, sweep, what="the run's training")
    run_pid = _lock_pid(tmp_path)
    wrapper = int(Path(f"/proc/{run_pid}/stat").read_text().split(")")[-1].split()[1])
    os.kill(wrapper, signal.SIGKILL)
    assert sweep.wait(timeout=120) == 1, (tmp_path / "sweep.log").read_text()[-3000:]
    assert _gone(run_pid, timeout=10), "the run must not go on as an orphan"
    (run_id, status), = db_runs(tmp_path)
    assert status == "KILLED" and "killed by SIGKILL" in db_tags(tmp_path, run_id)["sweep.error"]


def test_a_sweep_killed_by_sigkill_leaves_no_run_going_on(tmp_path, synth_cache, store):
    """The sweep process itself SIGKILLed while its run trains: the run gets SIGTERM from the kernel
    (PR_SET_PDEATHSIG) and sees its parent gone, stops at the next safe point with last.ckpt and ends KILLED."""
    sweep = start([*CLI, "sweep", "--config", _sweep_file(tmp_path, synth_cache, seeds=(0,))], tmp_path, "sweep")
    wait_for(lambda: logged_steps(tmp_path) >= 1, sweep, what="the run's training")
    run_pid = _lock_pid(tmp_path)
    assert kill(sweep) == -signal.SIGKILL
    assert _gone(run_pid, timeout=120), "the run must stop when its sweep dies"
    (run_id, status), = db_runs(tmp_path)
    assert status == "KILLED" and "SIGTERM" in db_tags(tmp_path, run_id)["end_reason"]
    assert (only_run_dir(tmp_path) / "checkpoints" / "last.ckpt").is_file()
