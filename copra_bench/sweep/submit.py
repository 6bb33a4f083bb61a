"""Submit a sweep's unfinished points as one submitit job array (``launcher: {kind: submitit, ...}``).

For each point not FINISHED, not claimed by a live process and not already queued by a live job, the sweep creates
(or reuses: an unfinished run with a ``last.ckpt``, or one still SCHEDULED) the point's MLflow run, marks it
SCHEDULED, and submits one :class:`~copra_bench.sweep.job.SweepJob` per point through one ``executor.batch()``:
SLURM gets one job array (``--array=0-N%array_parallelism``). Each run gets the tag ``sweep.job_id``, and
``<sweep folder>/jobs.json`` (``outputs/sweeps/<sweep id>/``, or ``--log-dir``) maps point -> job id -> run id.
The sweep prints the ids and returns; ``--wait`` blocks until every job has ended (scripts, tests).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from copra_bench.sweep.job import TAG_JOB, SweepJob
from copra_bench.sweep.plan import run_tags, store_key
from copra_bench.sweep.spec import PlannedRun, SweepSpec
from copra_bench.sweep.store import TAG_HASH, TAG_LOG, SweepStore, retry
from copra_bench.tracking.run_lock import LockFile, pid_alive

JOBS_FILE = "jobs.json"
#: SLURM job states of a job that will still run (or runs).
_ALIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUE_HOLD", "RESIZING",
          "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}


def submitit_folder(spec: SweepSpec, log_dir: Path) -> Path:
    return Path(spec.submitit.folder).expanduser().resolve() if spec.submitit and spec.submitit.folder \
        else (log_dir / "submitit").resolve()


def job_alive(cluster: str, folder: Path, job: str | None) -> bool:
    """Whether the job ``job`` of this sweep's executor will still run: SLURM asks sacct (through submitit)."""
    if not job:
        return False
    if cluster == "local":  # a local job's id is its controller's PID
        return job.isdigit() and pid_alive(int(job))
    if cluster == "slurm":
        try:
            from submitit import SlurmJob

            return SlurmJob(folder, job).state.split()[0] in _ALIVE
        except Exception:  # noqa: BLE001 - sacct not reachable: count it alive rather than run a point twice
            return True
    return False


def submit_sweep(spec: SweepSpec, runs: list[PlannedRun], *, log_dir: Path, max_runs: int | None = None,
                 wait: bool = False, echo: Callable[[str], None] = print) -> int:
    """Submit the points left to run; the exit status (``wait``: 1 when a point did not finish)."""
    import submitit

    launcher = spec.submitit
    assert launcher is not None
    folder = submitit_folder(spec, log_dir)
    log_dir = log_dir.resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    jobs_path = log_dir / JOBS_FILE
    recorded = json.loads(jobs_path.read_text()) if jobs_path.is_file() else {}
    waiting: list[tuple[PlannedRun, SweepStore]] = []
    stores: dict[tuple, tuple[SweepStore, dict[str, str]]] = {}
    skipped = queued = 0
    seen: set[str] = set()
    for run in runs:
        key = store_key(run)
        if key not in stores:
            store = SweepStore(key[0], key[1], artifact_location=key[2])
            stores[key] = store, store.finished_hashes(spec.sweep_id)
        store, finished = stores[key]
        if run.config_hash in seen or run.config_hash in finished:
            skipped += 1
            continue
        seen.add(run.config_hash)
        claim = LockFile(store.claims_dir(log_dir) / f"{run.config_hash}.claim")
        holder = claim.holder()
        if holder is not None and claim.is_live(holder):
            echo(f"  [{run.index}] running  {run.label}  (job {holder.get('job_id')}, PID {holder.get('pid')} on "
                 f"{holder.get('host')}): left to it")
            queued += 1
            continue
        previous = recorded.get(run.config_hash) or {}
        if job_alive(launcher.cluster, folder, previous.get("job_id")):
            echo(f"  [{run.index}] queued   {run.label}  (job {previous['job_id']}): left to it")
            queued += 1
            continue
        waiting.append((run, store))
    if max_runs is not None:
        waiting = waiting[:max_runs]
    todo = [(run, store, _run_id(spec, run, store)) for run, store in waiting]  # only the submitted get a run
    echo(f"sweep {spec.sweep_id}: {len(runs)} runs, {skipped} already finished, {queued} queued or running, "
         f"{len(todo)} to submit ({launcher.cluster}, {folder})")
    if not todo:
        return 0
    executor = submitit.AutoExecutor(folder=str(folder), cluster=launcher.cluster,
                                     slurm_max_num_timeout=launcher.max_requeues,
                                     local_max_num_timeout=launcher.max_requeues)
    executor.update_parameters(name=spec.sweep_id, **launcher.executor_parameters())
    callables = []
    for run, store, run_id in todo:
        log = str(log_dir / f"{run.index:03d}-{run_id}.log")
        retry(store.client.set_tag, run_id, TAG_LOG, log)
        callables.append(SweepJob(
            sweep_id=spec.sweep_id, index=run.index, config_hash=run.config_hash, subcommand=spec.subcommand,
            command=[*spec.launcher, spec.subcommand, *run.args], tracking_uri=store.tracking_uri,
            experiment_name=store.experiment_name, run_id=run_id, log=log,
            claims_dir=str(store.claims_dir(log_dir)), max_requeues=launcher.max_requeues))
    jobs = []
    with executor.batch():  # one sbatch --array for SLURM
        for job_callable in callables:
            jobs.append(executor.submit(job_callable))
    for (run, store, run_id), job in zip(todo, jobs, strict=True):
        retry(store.client.set_tag, run_id, TAG_JOB, str(job.job_id))
        recorded[run.config_hash] = {"index": run.index, "job_id": str(job.job_id), "run_id": run_id,
                                     "label": run.label, "submitted": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                    time.gmtime())}
        echo(f"  [{run.index}] submitted {run.label}  (job {job.job_id}, run {run_id})")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = jobs_path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(recorded, indent=1))
    tmp.replace(jobs_path)
    echo(f"sweep {spec.sweep_id}: submitted {len(jobs)} job(s): {' '.join(str(j.job_id) for j in jobs)}; "
         f"job ids in {jobs_path}; watch: python -m copra_bench sweep --config {spec.path} --status")
    return _wait(jobs, echo) if wait else 0


def _run_id(spec: SweepSpec, run: PlannedRun, store: SweepStore) -> str:
    """The point's MLflow run: the unfinished one to continue, else a new one; marked SCHEDULED."""
    mine = [r for r in store.sweep_runs(spec.sweep_id) if r.data.tags.get(TAG_HASH) == run.config_hash]
    latest = max(mine, key=lambda r: r.info.start_time or 0, default=None)
    resumable = store.resumable_run(spec.sweep_id, run.config_hash) if spec.subcommand == "fit" else None
    if resumable:
        run_id = resumable
    elif latest is not None and latest.info.status == "SCHEDULED":
        run_id = latest.info.run_id
    else:
        run_id = store.create_run(f"{spec.sweep_id}-{run.index:03d}", run_tags(spec, run))
    retry(store.client.update_run, run_id, status="SCHEDULED")
    return run_id


def _wait(jobs: list[Any], echo: Callable[[str], None]) -> int:
    failed = 0
    for job in jobs:
        try:
            outcome = job.result()
        except Exception as err:  # noqa: BLE001 - an UncompletedJobError (requeued too often) or the job's own error
            failed += 1
            echo(f"  job {job.job_id}: did not finish: {str(err).strip().splitlines()[-1][:300]}")
            continue
        if outcome.get("status") != "FINISHED":
            failed += 1
        echo(f"  job {job.job_id}: [{outcome['index']}] {outcome['status']} (run {outcome['run_id']}, requeued "
             f"{outcome['requeues']} time(s))")
    return 1 if failed else 0
