"""Run a sweep: resolve every run first, skip finished ones, run the rest as subprocesses (N at a time).

Each run is ``<launcher> <subcommand> <args> --trainer.logger.init_args.run_id <id>`` in its own process, its output
in ``<log_dir>/<index>-<run id>.log``. The MLflow run is created by the sweep before the process starts (tags
``sweep.id``, ``sweep.config_hash``, ``sweep.index``, ``sweep.axes``); a process that exits non-zero leaves its run
FAILED with the end of its output in the ``sweep.error`` tag, and the sweep goes on. Rerunning the sweep skips every
config hash that already has a FINISHED run. Ctrl-C / SIGTERM stops the running processes and marks their runs
KILLED; the next invocation runs them again.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from copra_bench.sweep.resolve import resolve_runs
from copra_bench.sweep.spec import PlannedRun, SweepError, SweepSpec, cli_value, display_value
from copra_bench.sweep.store import TAG_AXES, TAG_HASH, TAG_INDEX, TAG_LOG, TAG_SWEEP, SweepStore, retry

ERROR_TAIL_CHARS = 3000


@dataclass
class SweepResult:
    """What one invocation did. ``durations``: seconds each launched process ran (for overhead figures)."""

    planned: int = 0
    skipped: int = 0
    finished: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 130 if self.killed else (1 if self.failed else 0)


def _logger_args(run: PlannedRun) -> dict[str, Any]:
    return ((run.resolved.get("trainer") or {}).get("logger") or {}).get("init_args") or {}


def _store_key(run: PlannedRun) -> tuple[str, str, str | None]:
    init = _logger_args(run)
    if not init or "tracking_uri" not in init:
        raise SweepError(f"run {run.index} ({run.label}) has no MLflow logger (trainer.logger must be "
                         "copra_bench.tracking.MLFlowLogger: the sweep finds finished runs in MLflow)")
    return init["tracking_uri"], init.get("experiment_name") or "copra_bench", init.get("artifact_location")


def _method_name(run: PlannedRun) -> str | None:
    """``method_name`` of the run's model class (already imported by the parser; nothing is instantiated)."""
    import importlib

    class_path = (run.resolved.get("model") or {}).get("class_path") or ""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(getattr(importlib.import_module(module), name), "method_name", None)
    except (ImportError, AttributeError, ValueError):
        return None


def _tags(spec: SweepSpec, run: PlannedRun) -> dict[str, str]:
    # The run's own process tags the runs it creates with method/dataset; a run created here gets the method now
    # (the report falls back to the data.name param for the dataset).
    tags = {TAG_SWEEP: spec.sweep_id, TAG_HASH: run.config_hash, TAG_INDEX: str(run.index),
            TAG_AXES: json.dumps({k: display_value(v) for k, v in run.axes.items()}), "subcommand": spec.subcommand}
    method = _method_name(run)
    return {**tags, "method": method} if method else tags


def command_of(spec: SweepSpec, run: PlannedRun, *, run_id: str | None = None) -> list[str]:
    """The run's command line. Without ``run_id`` (a scheduler's job) the run creates its own MLflow run, tagged."""
    command = [*spec.launcher, spec.subcommand, *run.args]
    if run_id is not None:
        return command + ["--trainer.logger.init_args.run_id", run_id]
    tags = {**(_logger_args(run).get("tags") or {}), **_tags(spec, run)}
    return command + ["--trainer.logger.init_args.tags", json.dumps(tags)]


def prepare(spec: SweepSpec, *, overrides: dict[str, Any] | None = None, parser: Any = None) -> list[PlannedRun]:
    """Expand and resolve the grid (``overrides`` are appended to every run, e.g. the tracking URI)."""
    runs = spec.expand()
    for run in runs:
        for key, value in (overrides or {}).items():
            run.args += [f"--{key}", cli_value(value)]
    resolve_runs(spec.subcommand, runs, list(spec.grid), parser=parser)
    return runs


def unfinished(spec: SweepSpec, runs: list[PlannedRun]) -> tuple[list[PlannedRun], int]:
    """The runs without a FINISHED MLflow run of their config (read-only: creates no store), and how many have one."""
    done: dict[tuple, dict[str, str]] = {}
    todo: list[PlannedRun] = []
    for run in runs:
        key = _store_key(run)
        if key not in done:
            done[key] = SweepStore(key[0], key[1], artifact_location=key[2], create=False).finished_hashes(spec.sweep_id)
        if run.config_hash not in done[key]:
            todo.append(run)
    return todo, len(runs) - len(todo)


def run_sweep(spec: SweepSpec, runs: list[PlannedRun], *, max_parallel: int = 1, dry_run: bool = False,
              max_runs: int | None = None, log_dir: Path | None = None,
              echo: Callable[[str], None] = print) -> SweepResult:
    """Run (or with ``dry_run`` list) the runs not finished yet. See the module docstring."""
    result = SweepResult(planned=len(runs))
    stores: dict[tuple, SweepStore] = {}
    finished: dict[tuple, dict[str, str]] = {}
    pending: list[tuple[PlannedRun, SweepStore]] = []
    seen: dict[str, int] = {}
    for run in runs:
        key = _store_key(run)
        if key not in stores:
            stores[key] = SweepStore(key[0], key[1], artifact_location=key[2], create=not dry_run)
            finished[key] = stores[key].finished_hashes(spec.sweep_id)
        store, done = stores[key], finished[key]
        if run.config_hash in seen:
            echo(f"run {run.index} ({run.label}) has the same resolved config as run {seen[run.config_hash]}: "
                 "skipped")
            result.skipped += 1
            continue
        seen[run.config_hash] = run.index
        if run.config_hash in done:
            result.skipped += 1
            if dry_run:
                echo(f"  [{run.index}] done     {run.label}  (run {done[run.config_hash]})")
            continue
        pending.append((run, store))
        if dry_run:
            echo(f"  [{run.index}] to run   {run.label}  hash {run.config_hash}")
    if max_runs is not None:
        pending = pending[:max_runs]
    echo(f"sweep {spec.sweep_id}: {len(runs)} runs, {result.skipped} already finished, "
         f"{len(pending)} to run" + (" (dry run: nothing started)" if dry_run else f", {max_parallel} at a time"))
    if dry_run or not pending:
        return result
    if max_parallel > 1:
        for store in stores.values():
            store.enable_wal()
    log_dir = Path(log_dir or Path("outputs") / "sweeps" / spec.sweep_id)
    log_dir.mkdir(parents=True, exist_ok=True)
    _execute(spec, pending, max_parallel, log_dir, result, echo)
    echo(f"sweep {spec.sweep_id}: {len(result.finished)} finished, {len(result.failed)} failed"
         + (f", {len(result.killed)} killed" if result.killed else "") + f"; logs in {log_dir}")
    return result


@dataclass
class _Active:
    run: PlannedRun
    store: SweepStore
    run_id: str
    process: subprocess.Popen
    log: Path
    started: float


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _execute(spec: SweepSpec, pending: list[tuple[PlannedRun, SweepStore]], max_parallel: int, log_dir: Path,
             result: SweepResult, echo: Callable[[str], None]) -> None:
    queue = list(pending)
    active: list[_Active] = []
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}
    previous = signal.signal(signal.SIGTERM, _interrupt) if _main_thread() else None
    try:
        while queue or active:
            while queue and len(active) < max(1, max_parallel):
                run, store = queue.pop(0)
                run_id = store.create_run(f"{spec.sweep_id}-{run.index:03d}", _tags(spec, run))
                log = log_dir / f"{run.index:03d}-{run_id}.log"
                retry(store.client.set_tag, run_id, TAG_LOG, str(log.resolve()))
                command = command_of(spec, run, run_id=run_id)
                with open(log, "w") as fh:
                    fh.write("$ " + shlex.join(command) + "\n")
                    fh.flush()
                    process = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, env=env)
                active.append(_Active(run, store, run_id, process, log, time.perf_counter()))
                echo(f"  [{run.index}] started  {run.label}  (run {run_id})")
            time.sleep(0.05)
            for item in [a for a in active if a.process.poll() is not None]:
                active.remove(item)
                _record(item, result, echo)
    except KeyboardInterrupt:
        for item in active:
            item.process.terminate()
        for item in active:
            try:
                item.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                item.process.kill()
                item.process.wait()
            item.store.finish(item.run_id, "KILLED", error="sweep interrupted; rerun the sweep to run it again")
            result.killed.append(item.run.index)
            echo(f"  [{item.run.index}] stopped  {item.run.label}  (run {item.run_id})")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _record(item: _Active, result: SweepResult, echo: Callable[[str], None]) -> None:
    seconds = time.perf_counter() - item.started
    result.durations.append(seconds)
    code = item.process.returncode
    if code == 0:
        item.store.finish(item.run_id, "FINISHED")
        result.finished.append(item.run.index)
        echo(f"  [{item.run.index}] finished {item.run.label}  ({seconds:.1f} s, run {item.run_id})")
        return
    tail = item.log.read_text(errors="replace")[-ERROR_TAIL_CHARS:]
    item.store.finish(item.run_id, "FAILED", error=f"exit status {code}\n{tail}")
    result.failed.append(item.run.index)
    last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
    echo(f"  [{item.run.index}] FAILED   {item.run.label}  (exit {code}: {last[:200]}; log {item.log})")


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
