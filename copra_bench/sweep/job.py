"""One grid point as a submitit job: a :class:`submitit.helpers.Checkpointable` callable, requeued on preemption.

The job (re)uses the point's MLflow run (created by the sweep at submission), takes the point's claim (so no other
sweep process or job runs it at the same time; the claim records host, PID and job id for ``sweep --status``), and
runs ``<command> <subcommand> <args> --trainer.logger.init_args.run_id <id>`` as a process group
(:mod:`copra_bench.sweep.processes`), continuing a ``fit`` that has a ``last.ckpt`` with ``--ckpt_path last``.

Preemption and time-out: SLURM (``--signal=USR2@90``, or ``scancel --signal``) and submitit's local executor send the
job its preemption signal (``SUBMITIT_PREEMPT_SIGNAL``, USR2 by default); submitit's handler calls
:meth:`SweepJob.checkpoint`, which sends SIGTERM to the run (it finishes its step, writes ``last.ckpt`` and exits
143), waits for it, counts the requeue in the ``sweep.requeues`` tag and returns a ``DelayedSubmission`` of the job:
submitit requeues it (``scontrol requeue``; the local executor restarts it) and the next start resumes from
``last.ckpt`` in the same MLflow run. Past ``max_requeues`` the run is FAILED with a message instead. A run that
receives SIGTERM from the cluster itself (SLURM preemption signals every process of the job) waits up to
:data:`PREEMPT_WAIT_S` seconds for the job's own signal before it counts as KILLED.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import time
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable, DelayedSubmission

from copra_bench.sweep.processes import (
    describe_exit,
    ended_by_signal,
    launch,
    signal_group,
)
from copra_bench.sweep.store import TAG_ERROR, TAG_LOG, SweepStore, retry
from copra_bench.tracking.run_lock import LockFile

TAG_JOB = "sweep.job_id"
TAG_REQUEUES = "sweep.requeues"
TAG_HOST = "sweep.host"
#: Seconds a run has, once signalled, to write last.ckpt and exit before SIGKILL (SLURM gives ~90 s after USR2).
STOP_GRACE_S = float(os.environ.get("COPRA_SWEEP_STOP_GRACE_S", "80"))
#: Seconds a run stopped by the cluster's SIGTERM waits for the job's preemption signal (then: KILLED).
PREEMPT_WAIT_S = float(os.environ.get("COPRA_SWEEP_PREEMPT_WAIT_S", "60"))
CLAIM_HEARTBEAT_S = 30.0
ERROR_TAIL_CHARS = 3000


def job_id() -> str:
    """This job's id as the scheduler knows it (``12345_7`` for an array task), else this process's PID."""
    try:
        import submitit

        return str(submitit.JobEnvironment().job_id)
    except RuntimeError:  # not inside a submitit job
        return str(os.getpid())


def run_environment(environ: Any) -> dict[str, str]:
    """The run's environment inside a job. The run is the job's one task and Lightning starts its DDP processes
    itself (``trainer.devices`` GPUs of the job's ``gpus_per_node``), so Lightning must not take the job for an
    ``srun``-launched DDP task (``SLURMEnvironment`` would refuse ``devices=2`` with ``--ntasks-per-node=1``, and
    install its SIGUSR1 auto-requeue beside submitit's requeue): the job name ``interactive`` is Lightning's
    documented way to say so (``SLURMEnvironment.detect``)."""
    env = {**environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}
    if "SLURM_NTASKS" in env:
        env["SLURM_JOB_NAME"] = "interactive"
    return env


class SweepJob(Checkpointable):
    """The job of one grid point (see the module docstring); its attributes are what the requeued job needs."""

    def __init__(self, *, sweep_id: str, index: int, config_hash: str, subcommand: str, command: list[str],
                 tracking_uri: str, experiment_name: str, run_id: str, log: str, claims_dir: str,
                 max_requeues: int) -> None:
        self.sweep_id, self.index, self.config_hash, self.subcommand = sweep_id, index, config_hash, subcommand
        self.command, self.run_id, self.log, self.claims_dir = list(command), run_id, log, claims_dir
        self.tracking_uri, self.experiment_name, self.max_requeues = tracking_uri, experiment_name, max_requeues
        self.requeues = 0
        self._runtime: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:  # the process, claim and store stay in this job
        return {k: v for k, v in self.__dict__.items() if k != "_runtime"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._runtime = {}

    # ------------------------------------------------------------------------------------------------- the job
    def __call__(self) -> dict[str, Any]:
        store = SweepStore(self.tracking_uri, self.experiment_name)
        claim = LockFile(Path(self.claims_dir) / f"{self.config_hash}.claim")
        holder = claim.try_acquire(sweep=self.sweep_id, index=self.index, job_id=job_id(), run_id=self.run_id)
        if holder is not None:
            return self._outcome("elsewhere", f"claimed by PID {holder.get('pid')} on {holder.get('host')}")
        if self.config_hash in store.finished_hashes(self.sweep_id):
            claim.release()
            return self._outcome("FINISHED", "finished by another process")
        self._runtime.update(store=store, claim=claim, stopping=False)
        try:
            return self._run(store, claim)
        finally:
            if not self._runtime.get("checkpointed"):
                claim.release()

    def _run(self, store: SweepStore, claim: LockFile) -> dict[str, Any]:
        for key, value in {TAG_JOB: job_id(), TAG_REQUEUES: str(self.requeues), TAG_HOST: socket.gethostname(),
                           TAG_LOG: self.log}.items():
            retry(store.client.set_tag, self.run_id, key, value)
        command = [*self.command, "--trainer.logger.init_args.run_id", self.run_id]
        if self.subcommand == "fit" and self._has_last_ckpt(store):
            command += ["--ckpt_path", "last"]
        env = run_environment(os.environ)
        Path(self.log).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as fh:
            fh.write(f"$ {shlex.join(command)}\n  (job {job_id()}, PID {os.getpid()} on {socket.gethostname()}, "
                     f"requeued {self.requeues} time(s))\n")
            fh.flush()
            process = launch(command, fh, env)
        self._runtime["process"] = process
        beat = time.monotonic()
        while process.poll() is None:  # poll, not wait(): the preemption handler runs in this thread
            time.sleep(0.2)
            if time.monotonic() - beat > CLAIM_HEARTBEAT_S:
                beat = time.monotonic()
                claim.touch()
        code = process.returncode
        signal_group(process, signal.SIGKILL)
        if ended_by_signal(code) and not self._runtime.get("stopping"):
            deadline = time.monotonic() + PREEMPT_WAIT_S  # the cluster's SIGTERM came first: wait for checkpoint()
            while time.monotonic() < deadline and not self._runtime.get("stopping"):
                time.sleep(0.2)
        if code == 0:
            store.finish(self.run_id, "FINISHED")
            return self._outcome("FINISHED", "")
        tail = Path(self.log).read_text(errors="replace")[-ERROR_TAIL_CHARS:]
        status = "KILLED" if ended_by_signal(code) else "FAILED"
        store.finish(self.run_id, status, error=f"{describe_exit(code)} (job {job_id()})\n{tail}")
        return self._outcome(status, describe_exit(code))

    def _has_last_ckpt(self, store: SweepStore) -> bool:
        run_dir = retry(store.client.get_run, self.run_id).data.tags.get("run_dir")
        return bool(run_dir) and (Path(run_dir) / "checkpoints" / "last.ckpt").is_file()

    def _outcome(self, status: str, detail: str) -> dict[str, Any]:
        return {"index": self.index, "run_id": self.run_id, "status": status, "detail": detail,
                "requeues": self.requeues}

    # -------------------------------------------------------------------------------------- preemption / timeout
    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission | None:
        """Stop the run at a safe point (it writes last.ckpt), then requeue this job, or FAIL past max_requeues."""
        self._runtime["stopping"] = True
        process = self._runtime.get("process")
        if process is not None:  # processes.stop_group, but polling: wait() here (inside the signal handler) could
            signal_group(process, signal.SIGTERM)  # block on the Popen lock the interrupted poll() holds
            deadline = time.monotonic() + STOP_GRACE_S
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if process.poll() is None:
                signal_group(process, signal.SIGKILL)
                while process.poll() is None:
                    time.sleep(0.1)
        store = self._runtime.get("store") or SweepStore(self.tracking_uri, self.experiment_name)
        code = process.returncode if process is not None else None
        self.requeues += 1
        retry(store.client.set_tag, self.run_id, TAG_REQUEUES, str(self.requeues))
        claim = self._runtime.get("claim")
        if claim is not None:
            claim.release()
        self._runtime["checkpointed"] = True
        stopped = describe_exit(code) if code is not None else "before the run started"
        if code == 0:  # it finished just before the signal: nothing to resume
            store.finish(self.run_id, "FINISHED")
            return None
        if self.requeues > self.max_requeues:
            store.finish(self.run_id, "FAILED", error=f"preempted or timed out {self.requeues} times, more than "
                         f"launcher.max_requeues={self.max_requeues} (job {job_id()}, run {stopped}); raise "
                         "max_requeues or timeout_min, then rerun the sweep: it resumes from last.ckpt")
            return None
        store.finish(self.run_id, "KILLED", error=f"preempted or timed out (job {job_id()}, run {stopped}): "
                                                  f"requeued ({self.requeues} of at most {self.max_requeues})")
        return DelayedSubmission(self)


def requeue_count(tags: dict[str, str]) -> int:
    try:
        return int(tags.get(TAG_REQUEUES, "0"))
    except ValueError:
        return 0


__all__ = ["TAG_ERROR", "TAG_JOB", "TAG_REQUEUES", "SweepJob", "job_id", "requeue_count", "run_environment"]
