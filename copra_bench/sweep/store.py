"""The sweep's side of the MLflow store: find finished runs, create runs, record outcomes, safely under contention.

Runs are created here, one at a time, by the sweep process (serialised creation), and each run's process logs into
its run through ``trainer.logger.init_args.run_id``. For a sqlite store run with ``--max-parallel`` > 1 the
database is switched to WAL journaling (readers no longer block the writer) and every call of the sweep process is
retried while the database is locked by a run's process.

Before a sweep process starts a grid point it claims it (:meth:`SweepStore.claim`): an ``O_EXCL`` file per config hash
next to the store (``<db>.claims/<experiment id>/<config hash>.claim`` for a sqlite store, whose folder every sweep
process on the store shares; under the sweep's log folder for a server), so two sweep processes on one sweep file never
run the same point twice; a claim whose sweep process is dead (or silent for ``COPRA_LOCK_STALE_S`` seconds, another
host) is taken over.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from copra_bench.errors import TrackingError
from copra_bench.tracking.run_lock import LockFile

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

TAG_SWEEP = "sweep.id"
TAG_HASH = "sweep.config_hash"
TAG_INDEX = "sweep.index"
TAG_AXES = "sweep.axes"
TAG_ERROR = "sweep.error"
TAG_LOG = "sweep.log"
MLFLOW_TAG_LIMIT = 5000  # MLflow tag values hold at most 8000 characters; keep room


def retry(fn: Any, *args: Any, attempts: int = 8, **kwargs: Any) -> Any:
    """Call ``fn``, retrying with backoff while sqlite reports the database locked or busy."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # mlflow wraps sqlalchemy's OperationalError in several types
            text = str(err).lower()
            if attempt == attempts - 1 or ("locked" not in text and "busy" not in text):
                raise
            time.sleep(0.05 * 2 ** attempt)
    return None  # pragma: no cover


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    return Path(uri[len("sqlite:///"):]).expanduser() if uri.startswith("sqlite:///") else None


class SweepStore:
    """One tracking URI + experiment, as the sweep sees it.

    Args:
        tracking_uri: The runs' ``trainer.logger.init_args.tracking_uri``.
        experiment_name: The runs' ``trainer.logger.init_args.experiment_name``.
        artifact_location: Artifact root if the experiment is created here.
        create: Create the store and experiment when missing (False for ``--dry-run``: read only if present).
    """

    def __init__(self, tracking_uri: str, experiment_name: str, *, artifact_location: str | None = None,
                 create: bool = True) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.experiment_id: str | None = None
        db = sqlite_path(tracking_uri)
        if not create and db is not None and not db.is_file():
            self.client = None
            return
        from copra_bench.store_uri import (  # mlflow is slow to import: only here
            prepare_sqlite_store,
            tracking_client,
        )
        from copra_bench.tracking import check_tracking_uri

        check_tracking_uri(tracking_uri)
        if create:
            prepare_sqlite_store(tracking_uri)  # two sweeps (or array jobs) on a new store: one migrates it
        for attempt in range(5):  # two sweep processes on a new store race to create its tables and experiment
            try:
                self.client = tracking_client(tracking_uri)
                experiment = retry(self.client.get_experiment_by_name, experiment_name)
                if experiment is None and create:
                    self.experiment_id = retry(self.client.create_experiment, experiment_name,
                                               artifact_location=artifact_location)
                elif experiment is not None:
                    self.experiment_id = experiment.experiment_id
                return
            except TrackingError:
                raise
            except Exception as err:
                if attempt == 4:
                    raise TrackingError(f"MLflow store {tracking_uri}: cannot open experiment {experiment_name!r}: "
                                        f"{err}") from err
                time.sleep(0.5 * (attempt + 1))

    def enable_wal(self) -> None:
        """Switch a sqlite store to WAL journaling (persistent in the file; no-op for other stores)."""
        db = sqlite_path(self.tracking_uri)
        if db is not None and db.is_file():
            with sqlite3.connect(db, timeout=30) as connection:
                connection.execute("PRAGMA journal_mode=WAL")

    def sweep_runs(self, sweep_id: str) -> list[Any]:
        """Every MLflow run of this experiment tagged with ``sweep_id`` (all statuses)."""
        if self.client is None or self.experiment_id is None:
            return []
        runs, token = [], None
        while True:
            page = retry(self.client.search_runs, [self.experiment_id],
                         filter_string=f"tags.`{TAG_SWEEP}` = '{sweep_id}'", max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def finished_hashes(self, sweep_id: str) -> dict[str, str]:
        """config hash -> run id of the FINISHED runs of ``sweep_id``."""
        return {run.data.tags[TAG_HASH]: run.info.run_id for run in self.sweep_runs(sweep_id)
                if run.info.status == "FINISHED" and TAG_HASH in run.data.tags}

    def create_run(self, run_name: str, tags: dict[str, str]) -> str:
        """A new RUNNING run with ``tags``; returns its id."""
        run = retry(self.client.create_run, self.experiment_id, run_name=run_name,
                    tags={k: str(v)[:MLFLOW_TAG_LIMIT] for k, v in tags.items()})
        return run.info.run_id

    def finish(self, run_id: str, status: str, *, error: str | None = None) -> None:
        """Set the run's final status (unless its own process already did) and record ``error`` as a tag.

        A KILLED run whose process had already marked it FINISHED (interrupted while exiting) stays FINISHED.
        """
        current = retry(self.client.get_run, run_id).info.status
        if status == "KILLED" and current == "FINISHED":
            return
        if error:
            retry(self.client.set_tag, run_id, TAG_ERROR, error[-MLFLOW_TAG_LIMIT:])
        if current == "RUNNING" or (status != "FINISHED" and current != status):
            retry(self.client.set_terminated, run_id, status)

    def claims_dir(self, fallback: Path, *, create: bool = True) -> Path:
        """Where this store's grid-point claims live (see the module docstring); ``fallback`` for a server."""
        db = sqlite_path(self.tracking_uri)
        root = db.resolve().parent / f"{db.name}.claims" if db is not None else Path(fallback) / "claims"
        folder = root / str(self.experiment_id)
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        return folder

    def claim(self, config_hash: str, fallback: Path) -> LockFile:
        """The claim file of one grid point (not taken yet: ``try_acquire`` it)."""
        return LockFile(self.claims_dir(fallback) / f"{config_hash}.claim")

    def resumable_run(self, sweep_id: str, config_hash: str) -> str | None:
        """The latest unfinished run of this point that has a ``last.ckpt`` to continue from (its ``run_dir`` tag)."""
        runs = [r for r in self.sweep_runs(sweep_id) if r.data.tags.get(TAG_HASH) == config_hash]
        for run in sorted(runs, key=lambda r: r.info.start_time or 0, reverse=True):
            if run.info.status == "FINISHED":
                return None
            run_dir = run.data.tags.get("run_dir")
            if run_dir and (Path(run_dir) / "checkpoints" / "last.ckpt").is_file():
                return run.info.run_id
        return None
