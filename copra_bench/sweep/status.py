"""``sweep --config F --status``: each grid point's state from the MLflow store and the claims, read only.

States: ``queued`` (no run yet, or a SCHEDULED run: submitted, waiting for a node), ``running`` (a live claim: host,
PID, job id; the last step and epoch the run logged and when), ``stale`` (RUNNING in the store but no live process
holds it: a node died; the next ``sweep`` continues it), ``finished`` (with its AUC per test set), ``failed`` /
``killed`` (with the end reason), and ``requeued N`` where a job was preempted or timed out. Works while the sweep
runs elsewhere: it only reads the store (MLflow's client, retried while the sqlite file is locked) and claim files.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from copra_bench.sweep.job import TAG_JOB, requeue_count
from copra_bench.sweep.plan import store_key
from copra_bench.sweep.spec import PlannedRun, SweepSpec
from copra_bench.sweep.store import TAG_ERROR, TAG_HASH, SweepStore, retry, sqlite_path
from copra_bench.tracking.run_lock import LockFile


def point_states(spec: SweepSpec, runs: list[PlannedRun], *, log_dir: Path) -> list[dict[str, Any]]:
    """One record per point: ``index``, ``label``, ``state``, ``detail``, ``requeues``, ``run_id``.

    Raises:
        FileNotFoundError: the store of a run does not exist (its message says which and what it means).
    """
    cache: dict[tuple, tuple[SweepStore, dict[str, list[Any]]]] = {}
    records = []
    for run in runs:
        key = store_key(run)
        if key not in cache:
            db = sqlite_path(key[0])
            if db is not None and not db.is_file():
                raise FileNotFoundError(f"the MLflow store {key[0]} does not exist: nothing of sweep "
                                        f"{spec.sweep_id} has run against it yet (or --tracking-uri / the configs' "
                                        "tracking_uri point elsewhere)")
            store = SweepStore(key[0], key[1], create=False)
            by_hash: dict[str, list[Any]] = {}
            for mlflow_run in store.sweep_runs(spec.sweep_id):
                by_hash.setdefault(mlflow_run.data.tags.get(TAG_HASH, ""), []).append(mlflow_run)
            cache[key] = store, by_hash
        store, by_hash = cache[key]
        history = sorted(by_hash.get(run.config_hash, []), key=lambda r: r.info.start_time or 0)
        holder = None
        if store.experiment_id is not None:
            claim = LockFile(store.claims_dir(log_dir, create=False) / f"{run.config_hash}.claim")
            found = claim.holder()
            holder = found if found is not None and claim.is_live(found) else None
        records.append(_state(run, store, history, holder))
    return records


def _state(run: PlannedRun, store: SweepStore, history: list[Any], holder: dict | None) -> dict[str, Any]:
    record = {"index": run.index, "label": run.label, "run_id": None, "requeues": 0, "detail": ""}
    finished = [r for r in history if r.info.status == "FINISHED"]
    latest = finished[-1] if finished else (history[-1] if history else None)
    if latest is not None:
        record["run_id"] = latest.info.run_id
        record["requeues"] = requeue_count(latest.data.tags)
    status = latest.info.status if latest is not None else None
    if status == "FINISHED":
        metrics = {k: v for k, v in latest.data.metrics.items() if k.startswith("test/") and k.endswith("/auc")}
        shown = sorted(metrics)[:3]
        record.update(state="finished", detail=" ".join(f"{k.removeprefix('test/')}={metrics[k]:.4f}"
                                                        for k in shown))
    elif holder is not None:
        where = f"on {holder.get('host')} PID {holder.get('pid')}"
        if holder.get("job_id"):
            where += f" job {holder['job_id']}"
        record.update(state="running", detail=f"{where}{_progress(store, latest)}")
    elif status == "SCHEDULED" or latest is None:
        job = latest.data.tags.get(TAG_JOB) if latest is not None else None
        record.update(state="queued", detail=f"job {job}" if job else "no run yet")
    elif status == "RUNNING":
        record.update(state="stale", detail="RUNNING in the store but no live process holds it (its node or sweep "
                                            "died?): rerun the sweep to continue it" + _progress(store, latest))
    else:
        reason = (latest.data.tags.get(TAG_ERROR) or "").strip().splitlines()
        record.update(state=status.lower(), detail=(reason[0][:160] if reason else "no reason recorded")
                      + _progress(store, latest))
    return record


def _progress(store: SweepStore, latest: Any) -> str:
    """``, step 40 epoch 3 at 21:04:05 UTC`` from the run's ``epoch`` metric (Lightning logs it with each step)."""
    if latest is None:
        return ""
    try:
        history = retry(store.client.get_metric_history, latest.info.run_id, "epoch")
    except Exception:  # noqa: BLE001 - progress is a nicety: the state line stands without it
        return ""
    if not history:
        return ""
    last = max(history, key=lambda m: (m.step, m.timestamp))
    when = time.strftime("%H:%M:%S UTC", time.gmtime(last.timestamp / 1000))
    return f", step {last.step} epoch {int(last.value)} at {when}"


def print_status(spec: SweepSpec, runs: list[PlannedRun], *, log_dir: Path) -> int:
    """Print one line per point and a summary; exit status 0, or 2 when the store is missing."""
    try:
        records = point_states(spec, runs, log_dir=log_dir)
    except FileNotFoundError as err:
        print(f"sweep {spec.sweep_id}: {err}; {len(runs)} points, none started", file=sys.stderr)
        return 2
    for record in records:
        requeued = f" (requeued {record['requeues']}x)" if record["requeues"] else ""
        run = f" run {record['run_id']}" if record["run_id"] else ""
        print(f"  [{record['index']}] {record['state']:<9}{requeued} {record['label']}{run}  {record['detail']}")
    counts = Counter(r["state"] for r in records)
    requeues = sum(r["requeues"] for r in records)
    order = ["finished", "running", "queued", "stale", "failed", "killed"]
    summary = ", ".join(f"{counts[s]} {s}" for s in order if counts[s])
    print(f"sweep {spec.sweep_id}: {len(records)} points: {summary}" + (f"; {requeues} requeue(s)" if requeues else ""))
    return 0
