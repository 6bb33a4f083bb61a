"""Run a sweep: resolve every run first, skip finished ones, run the rest as subprocesses (N at a time).

Each run is ``<launcher> <subcommand> <args> --trainer.logger.init_args.run_id <id>`` in its own process group
(:mod:`copra_bench.sweep.processes`), its output in ``<log_dir>/<index>-<run id>.log``. Before a point starts, the
sweep claims it in the store (:meth:`SweepStore.claim`): a point claimed by another live sweep process is left to it.
The MLflow run is created by the sweep before the process starts (tags ``sweep.id``, ``sweep.config_hash``,
``sweep.index``, ``sweep.axes``); an unfinished ``fit`` of the point with a ``last.ckpt`` is continued instead
(``--ckpt_path last`` in its own run). A process that exits non-zero leaves its run FAILED (KILLED when a signal ended
it) with the end of its output in the ``sweep.error`` tag, and the sweep goes on. Rerunning the sweep skips every
config hash that already has a FINISHED run (a run is FINISHED only once its test is written). SIGTERM / Ctrl-C stops
the running processes (SIGTERM to their groups: they write ``last.ckpt`` and mark their runs KILLED; SIGKILL after
:data:`STOP_GRACE_S`), reports them as not finished and exits 143 / 130; the next invocation continues them.
With a :class:`~copra_bench.sweep.devices.DevicePool` (``--devices``) each run gets a slot of GPUs of its own through
``CUDA_VISIBLE_DEVICES`` (tag ``sweep.devices``), as many runs at once as there are slots. A sweep file with a submitit
launcher is submitted as a job array instead (:mod:`copra_bench.sweep.submit`).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from copra_bench.sweep.devices import DEVICES_ENV, TAG_DEVICES, DevicePool, visible
from copra_bench.sweep.plan import command_of, prepare, run_tags, store_key, unfinished
from copra_bench.sweep.processes import (
    describe_exit,
    ended_by_signal,
    launch,
    signal_group,
    stop_group,
)
from copra_bench.sweep.spec import PlannedRun, SweepSpec
from copra_bench.sweep.store import TAG_LOG, SweepStore, retry

__all__ = ["SweepResult", "command_of", "prepare", "run_sweep", "unfinished"]

ERROR_TAIL_CHARS = 3000
#: Seconds a stopped run has to reach its next safe point (finish its step, write last.ckpt) before SIGKILL.
STOP_GRACE_S = float(os.environ.get("COPRA_SWEEP_STOP_GRACE_S", "120"))
#: Seconds between heartbeats of the sweep's claims.
CLAIM_HEARTBEAT_S = 30.0


@dataclass
class SweepResult:
    """What one invocation did. ``durations``: seconds each launched process ran (for overhead figures)."""

    planned: int = 0
    skipped: int = 0
    finished: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)
    elsewhere: list[int] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    stop_signal: int | None = None

    @property
    def exit_code(self) -> int:
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        return 1 if self.failed or self.killed else 0


def run_sweep(spec: SweepSpec, runs: list[PlannedRun], *, max_parallel: int = 1, dry_run: bool = False,
              max_runs: int | None = None, log_dir: Path | None = None, devices: DevicePool | None = None,
              echo: Callable[[str], None] = print) -> SweepResult:
    """Run (or with ``dry_run`` list) the runs not finished yet. See the module docstring. ``devices``: each run
    gets a slot of GPUs of its own (``CUDA_VISIBLE_DEVICES``), as many at once as there are slots."""
    if devices is not None:
        max_parallel = devices.size
    result = SweepResult(planned=len(runs))
    stores: dict[tuple, SweepStore] = {}
    finished: dict[tuple, dict[str, str]] = {}
    pending: list[tuple[PlannedRun, SweepStore]] = []
    seen: dict[str, int] = {}
    for run in runs:
        key = store_key(run)
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
         f"{len(pending)} to run" + (" (dry run: nothing started)" if dry_run else f", {max_parallel} at a time")
         + (f" on GPU slots {' '.join(visible(s) for s in devices.slots)}" if devices is not None else ""))
    if dry_run or not pending:
        return result
    if max_parallel > 1:
        for store in stores.values():
            store.enable_wal()
    log_dir = Path(log_dir or Path("outputs") / "sweeps" / spec.sweep_id)
    log_dir.mkdir(parents=True, exist_ok=True)
    _execute(spec, pending, devices, max_parallel, log_dir, result, echo)
    echo(f"sweep {spec.sweep_id}: {len(result.finished)} finished, {len(result.failed)} failed"
         + (f", {len(result.killed)} killed (not finished: rerun the sweep to continue them)" if result.killed else "")
         + (f", {len(result.elsewhere)} run by another sweep process" if result.elsewhere else "")
         + f"; logs in {log_dir}")
    return result


@dataclass
class _Active:
    run: PlannedRun
    store: SweepStore
    run_id: str
    process: subprocess.Popen
    log: Path
    started: float
    claim: Any
    slot: tuple[int, ...] | None = None


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, frame: Any) -> None:
    raise _Stop(signum)


def _claim(spec: SweepSpec, run: PlannedRun, store: SweepStore, log_dir: Path, result: SweepResult,
           echo: Callable[[str], None]) -> Any:
    """This process's claim of ``run``'s point, or None (another live sweep process has it, or it finished)."""
    claim = store.claim(run.config_hash, log_dir)
    holder = claim.try_acquire(sweep=spec.sweep_id, index=run.index)
    if holder is not None:
        result.elsewhere.append(run.index)
        echo(f"  [{run.index}] claimed  {run.label}  by PID {holder.get('pid')} on {holder.get('host')}: left to "
             "that sweep process")
        return None
    if run.config_hash in store.finished_hashes(spec.sweep_id):  # finished by another process since we looked
        claim.release()
        result.skipped += 1
        return None
    return claim


def _start(spec: SweepSpec, run: PlannedRun, store: SweepStore, claim: Any, log_dir: Path,
           env: dict[str, str], slot: tuple[int, ...] | None, echo: Callable[[str], None]) -> _Active:
    resumed = store.resumable_run(spec.sweep_id, run.config_hash) if spec.subcommand == "fit" else None
    run_id = resumed or store.create_run(f"{spec.sweep_id}-{run.index:03d}", run_tags(spec, run))
    log = log_dir / f"{run.index:03d}-{run_id}.log"
    retry(store.client.set_tag, run_id, TAG_LOG, str(log.resolve()))
    where = ""
    if slot is not None:
        env = {**env, DEVICES_ENV: visible(slot)}
        retry(store.client.set_tag, run_id, TAG_DEVICES, visible(slot))
        where = f" on GPU {visible(slot)}"
    command = command_of(spec, run, run_id=run_id) + (["--ckpt_path", "last"] if resumed else [])
    with open(log, "a") as fh:
        fh.write(f"$ {shlex.join(command)}\n  (sweep PID {os.getpid()} on {socket.gethostname()}{where})\n")
        fh.flush()
        process = launch(command, fh, env)
    echo(f"  [{run.index}] {'resumed ' if resumed else 'started '} {run.label}  (run {run_id}{where})")
    return _Active(run, store, run_id, process, log, time.perf_counter(), claim, slot)


def _execute(spec: SweepSpec, pending: list[tuple[PlannedRun, SweepStore]], pool: DevicePool | None,
             max_parallel: int, log_dir: Path, result: SweepResult, echo: Callable[[str], None]) -> None:
    queue = list(pending)
    active: list[_Active] = []
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}
    main = _main_thread()
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
    beat = time.monotonic()
    try:
        while queue or active:
            while queue and len(active) < max(1, max_parallel):
                run, store = queue.pop(0)
                claim = _claim(spec, run, store, log_dir, result, echo)
                if claim is not None:
                    slot = pool.take() if pool is not None else None
                    try:
                        active.append(_start(spec, run, store, claim, log_dir, env, slot, echo))
                    except BaseException:
                        claim.release()
                        if slot is not None:
                            pool.give_back(slot)
                        raise
            time.sleep(0.05)
            if time.monotonic() - beat > CLAIM_HEARTBEAT_S:
                beat = time.monotonic()
                for item in active:
                    item.claim.touch()
            for item in [a for a in active if a.process.poll() is not None]:
                active.remove(item)
                if item.slot is not None:
                    pool.give_back(item.slot)
                _record(item, result, echo)
    except _Stop as stop:
        for s in previous:  # a second signal while stopping must not interrupt the clean-up
            signal.signal(s, signal.SIG_IGN)
        result.stop_signal = stop.signum
        echo(f"sweep {spec.sweep_id}: {stop} received: stopping {len(active)} run(s) (they write last.ckpt)")
        for item in active:
            signal_group(item.process, signal.SIGTERM)
        for item in active:
            code = stop_group(item.process, grace_s=STOP_GRACE_S)
            item.store.finish(item.run_id, "KILLED", error=f"sweep stopped by {stop} ({describe_exit(code)}); "
                                                           "rerun the sweep to continue it")
            item.claim.release()
            result.killed.append(item.run.index)
            echo(f"  [{item.run.index}] stopped  {item.run.label}  (run {item.run_id}, {describe_exit(code)}): "
                 "not finished")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _record(item: _Active, result: SweepResult, echo: Callable[[str], None]) -> None:
    seconds = time.perf_counter() - item.started
    result.durations.append(seconds)
    code = item.process.returncode
    signal_group(item.process, signal.SIGKILL)  # a wrapper that died leaves no orphan testing on
    try:
        if code == 0:
            item.store.finish(item.run_id, "FINISHED")
            result.finished.append(item.run.index)
            echo(f"  [{item.run.index}] finished {item.run.label}  ({seconds:.1f} s, run {item.run_id})")
            return
        tail = item.log.read_text(errors="replace")[-ERROR_TAIL_CHARS:]
        killed = ended_by_signal(code)
        item.store.finish(item.run_id, "KILLED" if killed else "FAILED", error=f"{describe_exit(code)}\n{tail}")
        (result.killed if killed else result.failed).append(item.run.index)
        last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
        echo(f"  [{item.run.index}] {'KILLED ' if killed else 'FAILED '}  {item.run.label}  ({describe_exit(code)}: "
             f"{last[:200]}; log {item.log})")
    finally:
        item.claim.release()


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
