"""A stand-in for ``python -m copra_bench <subcommand> ...`` for the sweep tests: it records what it got (seed, run id,
``--ckpt_path last``, ``CUDA_VISIBLE_DEVICES``, ``--trainer.devices``, PID, start and end time), marks its MLflow run
RUNNING and tags it with a run directory (through sqlite: no mlflow import, a quick start), runs ``FAKE_SECONDS`` and, on SIGTERM, writes
``last.ckpt`` and exits 143, as a real run does."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import yaml

FAKE_RUN = r'''
import json, os, pathlib, signal, sqlite3, sys, time
args = sys.argv[1:]
value = lambda key: args[args.index(key) + 1] if key in args else None
run_id, uri = value("--trainer.logger.init_args.run_id"), value("--trainer.logger.init_args.tracking_uri")
out = pathlib.Path(os.environ["FAKE_OUT"])
run_dir = out / "run_dirs" / run_id
(run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
record = {"seed": value("--seed_everything"), "run_id": run_id, "resume": value("--ckpt_path") == "last",
          "pid": os.getpid(), "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "devices": value("--trainer.devices"),
          "start": time.time()}
with sqlite3.connect(uri[len("sqlite:///"):], timeout=60) as db:
    db.execute("insert or replace into tags(key, value, run_uuid) values ('run_dir', ?, ?)", (str(run_dir), run_id))
    db.execute("update runs set status = 'RUNNING' where run_uuid = ?", (run_id,))  # as the real logger does
if value("--seed_everything") == os.environ.get("FAKE_FAIL_SEED"):
    print("RuntimeError: boom in seed " + value("--seed_everything"), file=sys.stderr)
    sys.exit(3)
end = time.time() + float(os.environ.get("FAKE_SECONDS", "2"))
while time.time() < end and not stop:
    time.sleep(0.05)
record["end"], record["stopped"] = time.time(), bool(stop)
with open(out / "calls.jsonl", "a") as fh:
    fh.write(json.dumps(record) + "\n")
if stop:
    (run_dir / "checkpoints" / "last.ckpt").write_text("saved")
    sys.exit(143)
'''


def fake_launcher(tmp_path: Path, monkeypatch, seconds: float = 2.0) -> list[str]:
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)
    monkeypatch.setenv("FAKE_OUT", str(tmp_path))
    monkeypatch.setenv("FAKE_SECONDS", str(seconds))
    return [sys.executable, str(script)]


def calls(tmp_path: Path) -> list[dict]:
    path = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def sweep_file(tmp_path: Path, seeds, *, launcher, configs: list[str], **extra) -> Path:
    raw = {"sweep": "t", "configs": configs,
           "set": {"trainer.logger.init_args.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                   "trainer.logger.init_args.local_dir": str(tmp_path / "outputs"), **extra.pop("set", {})},
           "grid": {"seed_everything": list(seeds)}, "launcher": launcher, **extra}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def db_runs(db: Path) -> list[tuple[str, str, dict]]:
    """(run id, status, tags) of every run, oldest first."""
    with sqlite3.connect(db) as connection:
        out = []
        for run_id, status in connection.execute("select run_uuid, status from runs order by start_time"):
            tags = dict(connection.execute("select key, value from tags where run_uuid=?", (run_id,)).fetchall())
            out.append((run_id, status, tags))
        return out
