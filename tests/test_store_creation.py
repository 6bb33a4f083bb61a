"""Several processes opening one new sqlite store at once (two sweeps, the jobs of an array, a sweep and its runs):
one of them creates its tables, the others wait and use them. MLflow alone migrates in every process and one fails
with ``table _alembic_tmp_... already exists``, leaving the file half-migrated."""

from __future__ import annotations

import subprocess
import sys
import time

PROCESSES = 3

OPENER = r"""
import os, sys, time
from pathlib import Path
from copra_bench.store_uri import prepare_sqlite_store, tracking_client
import mlflow.store.tracking.sqlalchemy_store  # the slow imports before the start line
uri, go = sys.argv[1], Path(sys.argv[2])
Path(f"{go}.ready.{os.getpid()}").touch()
while not go.exists():
    time.sleep(0.005)
prepare_sqlite_store(uri)
client = tracking_client(uri)
name = f"exp-{os.getpid()}"
client.create_experiment(name)
print(client.get_experiment_by_name(name).experiment_id)
"""


def test_processes_opening_one_new_store_at_once_all_succeed(tmp_path):
    uri, go = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "go"
    command = [sys.executable, "-c", OPENER, uri, str(go)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(PROCESSES)]
    deadline = time.time() + 120
    while len(list(tmp_path.glob("go.ready.*"))) < PROCESSES and time.time() < deadline:
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    go.touch()  # every process opens the store now
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * PROCESSES, [err[-2000:] for _, err in results]
    ids = {out.strip() for out, _ in results}
    assert len(ids) == PROCESSES  # each made its own experiment in the one store
