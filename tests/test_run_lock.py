"""Fast checks of the pieces behind long runs: the run lock and sweep claims, the generators' checkpoint state, the
train sampler's resumed position, the local run record and the report's duplicates (tests/test_faults_runs.py does
the faults themselves with real processes)."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from copra_bench.datamodules.datasets import EpochShuffle

from copra_bench.report.runs import RunRecord, mark_duplicates
from copra_bench.tracking.local_run import LocalRunRecord
from copra_bench.tracking.rng_state import TrainingRNG
from copra_bench.tracking.run_lock import LockFile, RunLock, RunLockedError


def test_a_live_lock_is_refused_naming_pid_and_host_and_a_dead_one_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "run.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                       "started": "then"}))
        with pytest.raises(RunLockedError, match=rf"PID {holder.pid} on host {socket.gethostname()}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock(tmp_path)
    lock.acquire()  # the holder is dead: stale, taken over
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "run.lock").exists()


def test_another_hosts_lock_is_stale_only_after_its_heartbeat_stops(tmp_path, monkeypatch):
    path = tmp_path / "point.claim"
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    assert LockFile(path).try_acquire()["host"] == "elsewhere"  # fresh heartbeat: live
    old = time.time() - 3600
    os.utime(path, (old, old))
    monkeypatch.setenv("COPRA_LOCK_STALE_S", "600")
    claim = LockFile(path)
    assert claim.try_acquire() is None and claim.held
    assert LockFile(path).holder()["pid"] == os.getpid(), "now this process holds it"


def test_generators_state_round_trips_through_a_checkpoint():
    callback = TrainingRNG()
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    callback.on_train_batch_end(None, None, None, None, 0)
    expected = torch.rand(3), np.random.rand(3), random.random()
    saved = torch.load(_roundtrip(callback.state_dict()), weights_only=True)  # what Lightning's loader accepts
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    resumed = TrainingRNG()
    resumed.load_state_dict(saved)
    resumed.on_train_batch_start(None, None, None, 0)
    again = torch.rand(3), np.random.rand(3), random.random()
    assert torch.equal(again[0], expected[0]) and np.array_equal(again[1], expected[1]) and again[2] == expected[2]


def _roundtrip(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_the_train_sampler_resumes_mid_epoch_in_a_later_epoch():
    """The loader's state is restored before Lightning sets the epoch: the skip applies to the epoch it was saved
    in, and each item's clip key is the same as in the uninterrupted pass."""
    uninterrupted = EpochShuffle(6, seed=1)
    uninterrupted.set_epoch(2)
    full = list(uninterrupted)
    resumed = EpochShuffle(6, seed=1)
    resumed.skip_epoch, resumed.skip = 2, 4
    resumed.set_epoch(2)
    assert list(resumed) == full[4:]
    later = EpochShuffle(6, seed=1)
    later.skip_epoch, later.skip = 1, 6  # saved at the end of epoch 1: epoch 2 is whole
    later.set_epoch(2)
    assert list(later) == full


def test_the_local_record_survives_a_line_cut_by_a_kill(tmp_path):
    record = LocalRunRecord(tmp_path)
    record.append_metrics({"time": 0, "step": 0, "train/loss": 1.0})
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"time": 1, "step": 1, "train/lo')
    assert record.logged_metric_steps() == {("train/loss", 0)}
    record.append_metrics({"time": 2, "step": 1, "train/loss": 2.0})
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0, 1]
    record.update(status="RUNNING", tags={"a": 1})
    record.update(status="FINISHED", tags={"b": 2})
    assert record.run["status"] == "FINISHED" and record.run["tags"] == {"a": "1", "b": "2"}


def test_the_report_counts_a_config_once():
    def run(run_id, digest, status="FINISHED"):
        return RunRecord(run_id=run_id, name=run_id, status=status, params={"protocol.x": "1"},
                         tags={"config_hash": digest}, results={("s", "step1", "auc"): 0.5})

    runs = [run("a", "h1"), run("b", "h1"), run("c", "h2"), run("d", "h1", "KILLED")]
    mark_duplicates(runs)
    assert runs[0].exclusion == "same config hash as the later run b: counted once"
    assert [r.exclusion for r in runs[1:3]] == [None, None] and runs[3].exclusion.startswith("status KILLED")
