"""Helpers of the fault-injection tests (tests/test_faults_runs.py): real ``python -m copra_bench`` processes on a
small copy of the tiny default, killed the way a cluster kills them, and readers of what they leave behind."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from .conftest import REPO, SMALL_WORLD

MAIN = str(REPO / "configs" / "cross_domain.yaml")
CLI = [sys.executable, "-m", "copra_bench"]
MAX_STEPS = 8  # 4 training videos, batch 1: two epochs, with a checkpoint every 2 steps


def write_job(folder: Path, cache: Path, *, max_steps: int = MAX_STEPS) -> list[str]:
    """The tiny default (COPRA on the tiny Qwen2-VL) on SMALL_WORLD data, batch 1: ``fit`` argv after the CLI."""
    folder.mkdir(parents=True, exist_ok=True)
    member = {**SMALL_WORLD, "cache_dir": str(cache)}
    synthetic = "copra_bench.datamodules.SyntheticUCFCrimeDataModule"
    data = {"class_path": "copra_bench.datamodules.CrossDomainDataModule",
            "init_args": {"source": {"class_path": synthetic, "init_args": {"domain": "A", **member}},
                          "target": {"class_path": synthetic, "init_args": {"domain": "B", **member}},
                          "window_seconds": 2.0, "frames_per_window": 4, "batch_size": 1, "val_fraction": 0.34,
                          "frame_size": None, "test_on_source": False}}
    trainer = {"max_steps": max_steps, "log_every_n_steps": 1, "num_sanity_val_steps": 0,
               "enable_progress_bar": False,
               "callbacks": [{"class_path": "copra_bench.tracking.RunArtifacts"},
                             {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                              "init_args": {"save_last": True, "every_n_train_steps": 2, "save_top_k": 0}}]}
    (folder / "data.yaml").write_text(yaml.safe_dump(data))
    (folder / "trainer.yaml").write_text(yaml.safe_dump(trainer))
    return ["fit", "--config", MAIN, "--data", str(folder / "data.yaml"), "--trainer", str(folder / "trainer.yaml"),
            "--model.init_args.epochs", "100", "--model.init_args.bootstrap_samples", "50"]


def start(argv: list[str], cwd: Path, name: str = "run", **kwargs: Any) -> subprocess.Popen:
    log = open(cwd / f"{name}.log", "ab")  # noqa: SIM115  (closed with the process)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env, **kwargs)


def run(argv: list[str], cwd: Path, name: str = "run", timeout: float = 300) -> tuple[int, str]:
    process = start(argv, cwd, name)
    code = process.wait(timeout=timeout)
    return code, (cwd / f"{name}.log").read_text(errors="replace")


def wait_for(condition, process: subprocess.Popen | None = None, timeout: float = 240, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process ended (exit {process.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def kill(process: subprocess.Popen, signum: int = signal.SIGKILL, timeout: float = 120) -> int:
    process.send_signal(signum)
    return process.wait(timeout=timeout)


def run_dirs(cwd: Path) -> list[Path]:
    return sorted(p for p in (cwd / "outputs").glob("*/*") if (p / "run.json").is_file())


def only_run_dir(cwd: Path) -> Path:
    dirs = run_dirs(cwd)
    assert len(dirs) == 1, dirs
    return dirs[0]


def logged_steps(cwd: Path) -> int:
    """Highest training step in the local metrics of the (only) run, -1 before the first."""
    steps = [s for s, _ in train_metrics_lines(cwd)] if run_dirs(cwd) else []
    return max(steps, default=-1)


def train_metrics_lines(cwd: Path) -> list[tuple[int, dict[str, float]]]:
    out = []
    for run_dir in run_dirs(cwd):
        path = run_dir / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.is_file() else []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            values = {k: v for k, v in record.items() if k.startswith("train/") and "timing" not in k}
            if values:
                out.append((record["step"], values))
    return out


def train_metrics(cwd: Path) -> dict[int, dict[str, float]]:
    """step -> the step's training metrics (no timings); fails if a step was logged twice."""
    lines = train_metrics_lines(cwd)
    steps = [s for s, _ in lines]
    assert len(steps) == len(set(steps)), f"a step was logged twice locally: {steps}"
    return dict(lines)


def run_json(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "run.json").read_text())


def results_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())["test"]


def trained_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")["state_dict"]


def db_runs(cwd: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(cwd / "mlflow.db") as db:
        return db.execute("select run_uuid, status from runs").fetchall()


def db_tags(cwd: Path, run_id: str) -> dict[str, str]:
    with sqlite3.connect(cwd / "mlflow.db") as db:
        return dict(db.execute("select key, value from tags where run_uuid=?", (run_id,)).fetchall())


def db_repeated_steps(cwd: Path, run_id: str) -> list[tuple[str, int, int]]:
    """(key, step, count) of every metric logged more than once at one step of ``run_id``."""
    with sqlite3.connect(cwd / "mlflow.db") as db:
        return db.execute("select key, step, count(*) from metrics where run_uuid=? and key like 'train/%' "
                          "group by key, step having count(*) > 1", (run_id,)).fetchall()


def assert_same_run(resumed: Path, reference: Path, resumed_cwd: Path, reference_cwd: Path) -> None:
    """Per-step training metrics, final weights and test metrics equal, bit for bit."""
    assert train_metrics(resumed_cwd) == train_metrics(reference_cwd)
    reference_state, state = trained_state(reference), trained_state(resumed)
    assert state.keys() == reference_state.keys()
    assert all(torch.equal(state[k], reference_state[k]) for k in state)
    assert results_of(resumed) == results_of(reference)
