"""The MLflow logger: Lightning's, with a checked store, a local copy of every metric and a failure-tolerant upload.

:class:`MLFlowLogger` checks the tracking URI before anything runs (an unreachable server fails the run at start, not
after hours of training); every metric, param and tag is first written to the run directory
(:mod:`copra_bench.tracking.local_run`: ``metrics.jsonl``, ``params.json``, ``run.json``); every call to the store
after the run exists is guarded, finalize included: a tracking failure is reported once and the run goes on, so what
was computed is never lost and ``sync`` can upload it later.

A run's status tells the truth: ``fit`` that tests afterwards keeps the run RUNNING when training ends (Lightning
finalizes its loggers at the end of ``fit``; :attr:`MLFlowLogger.hold_open` turns that into the ``training=finished``
tag) and it becomes FINISHED only when the test is written; FAILED or KILLED (stop signal) carry ``end_reason``.
A resumed ``fit`` logs each (metric, step) once: pairs the interrupted process already logged are not logged again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger as _LightningMLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from copra_bench.errors import TrackingError
from copra_bench.signals import STOP
from copra_bench.store_uri import (
    absolute_tracking_uri,
    check_tracking_uri,
    prepare_sqlite_store,
)

from .local_run import LocalRunRecord

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

MLFLOW_PARAM_LIMIT = 6000  # MLflow 3 accepts param values up to 6000 characters

#: Experiment tag MLflow 3's UI reads to choose an experiment's page, and the value that opens the runs table
#: ("custom model development"; without it the UI guesses GenAI and opens an empty traces overview). MLflow 3.17's UI
#: lets its "GenAI | Model training" switch (or ``?workflowType=machine_learning`` in the URL) decide instead: the
#: README gives that URL. The tag stays right for both, and for any other client that reads it.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

#: Tag set when a ``fit`` has written its final ``last.ckpt`` (its test may still be missing).
TRAINING_TAG = "training"
#: Tag holding why a run is FAILED or KILLED.
END_REASON_TAG = "end_reason"
_STATUS = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED"}


class _StoreErrorsToGuard(logging.Filter):
    """MLflow's sqlite store logs every failed write with its traceback and SQL before raising; the guard below
    reports a failing store once, so those records are dropped (the raised error still carries the message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


logging.getLogger("mlflow.store.db.utils").addFilter(_StoreErrorsToGuard())


LAUNCHED_RUN_ENV = "COPRA_DDP_RUN"  # "<rank 0's pid>:<experiment id>:<run id>", for the DDP ranks it launches

def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


class MLFlowLogger(_LightningMLFlowLogger):
    """Lightning's MLFlowLogger with a local copy of all metrics and a failure-tolerant upload.

    Args:
        experiment_name: MLflow experiment.
        run_name: Default: ``<method>-<dataset>``, set by the CLI.
        tracking_uri: Default ``sqlite:///mlflow.db`` in the working directory; ``http://host:port`` for a server.
        local_dir: Root of the local run directories ``<local_dir>/<experiment id>/<run id>/``.
        tags: Extra run tags.
        run_id: Log into this existing run (e.g. testing a trained model later) instead of starting a new one.
        artifact_location: Artifact root of a new experiment (default: the tracking store's).
    """

    def __init__(self, experiment_name: str = "copra_bench", run_name: str | None = None,
                 tracking_uri: str = "sqlite:///mlflow.db", local_dir: str = "outputs",
                 tags: dict[str, Any] | None = None, run_id: str | None = None,
                 artifact_location: str | None = None) -> None:
        tracking_uri = absolute_tracking_uri(tracking_uri)
        check_tracking_uri(tracking_uri)
        super().__init__(experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri,
                         tags=tags, save_dir=None, run_id=run_id, artifact_location=artifact_location)
        self.local_dir = Path(local_dir)
        self._upload_failed = False
        self._requested_run_id = run_id
        self._kind_checked = False
        #: While true, ``finalize("success")`` (the end of ``fit``) leaves the run RUNNING: its test follows.
        self.hold_open = False
        #: Why the run ended badly (set by the lifecycle callback); the ``end_reason`` tag.
        self.end_reason: str | None = None
        #: A resumed ``fit`` logs each (metric, step) once: pairs the run already has are not logged again (they
        #: are the same numbers: the resume is bit-exact). Off elsewhere: ``test`` into an existing run re-logs.
        self.log_once = False
        self._logged_before: tuple[set, set] | None = None  # (local, store) (key, step) pairs of a resumed run
        self._local: LocalRunRecord | None = None
        self._store_prepared = False

    # Lightning's MLFlowLogger keeps these settings in private attributes and reads them when it creates the run (in
    # ``experiment``). The properties below are the project's only access to them, so the rest of the code depends on
    # this class's public interface, not on Lightning's internals.

    @property
    def experiment(self) -> Any:
        """Lightning's MLflow client; the first access also marks the experiment as a model-development one
        (:data:`EXPERIMENT_KIND_TAG`), unless it already says what it is, so the MLflow UI opens on its runs."""
        if not self._store_prepared and rank_zero_only.rank == 0:
            self._store_prepared = True
            prepare_sqlite_store(self._tracking_uri)  # a new store's tables, created by one process at a time
        client = super().experiment
        if not self._kind_checked and self._experiment_id is not None and rank_zero_only.rank == 0:
            self._kind_checked = True
            self._guard("set_experiment_tag", self._tag_experiment_kind, client)
        return client

    def _tag_experiment_kind(self, client: Any) -> None:
        if EXPERIMENT_KIND_TAG not in client.get_experiment(self._experiment_id).tags:
            client.set_experiment_tag(self._experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)

    @property
    def tracking_uri(self) -> str:
        """The MLflow store (absolute for a local sqlite file)."""
        return self._tracking_uri

    @property
    def experiment_name(self) -> str:
        return self._experiment_name

    @property
    def run_started(self) -> bool:
        """Whether the MLflow run has been created or attached (by :meth:`start` or the first log call)."""
        return self._initialized

    @property
    def run_name(self) -> str | None:
        """Name of the run to create; settable only before the run exists (the CLI names it ``<method>-<dataset>``
        once the model and data are built)."""
        return self._run_name

    @run_name.setter
    def run_name(self, name: str | None) -> None:
        if self.run_started:
            raise RuntimeError(f"cannot rename MLflow run {self._run_id}: it was already created or attached")
        self._run_name = name

    @property
    def requested_run_id(self) -> str | None:
        """The existing run chosen before the start (``run_id`` argument or :meth:`attach_run`); None when the
        logger creates a new run. Unlike :attr:`run_id` this never creates the run."""
        return self._requested_run_id

    def attach_run(self, run_id: str) -> None:
        """Log into the existing run ``run_id`` instead of creating one (e.g. to resume it); only before the run
        is created or attached."""
        if self.run_started:
            raise RuntimeError(f"cannot attach MLflow run {run_id}: this logger already logs into {self._run_id}")
        self._run_id = self._requested_run_id = run_id

    @property
    def run_dir(self) -> Path:
        """Local folder of this run (created on first use, by DDP rank 0 only: the others have no run)."""
        path = self.local_dir / str(self.experiment_id) / str(self.run_id)
        if rank_zero_only.rank == 0:
            path.mkdir(parents=True, exist_ok=True)
        return path

    def start(self) -> None:
        """Create the run now, so a store that cannot be written fails before any work is done; write
        ``run.json``. An attached run (resumed) also learns which (metric, step) pairs it already has. On DDP ranks
        other than 0 nothing: the run, its store record and its local folder are rank 0's."""
        if rank_zero_only.rank != 0:
            self._adopt_launcher_run()
            return
        try:
            _ = self.experiment, self.run_id
        except Exception as err:  # mlflow raises many types here
            raise TrackingError(f"cannot create an MLflow run in {self.tracking_uri}: {err}") from err
        self._hand_over_to_launched_ranks()
        self._local = LocalRunRecord(self.run_dir)
        self._guard_local(self._local.update, run_id=self.run_id, run_name=self._run_name,
                          experiment_name=self.experiment_name, experiment_id=self.experiment_id,
                          tracking_uri=self.tracking_uri, status="RUNNING")
        if self._requested_run_id is not None and self.log_once:
            self._logged_before = (self._local.logged_metric_steps(), self._store_metric_steps())

    def _adopt_launcher_run(self) -> None:
        """A rank started by Lightning's ``ddp`` launcher takes rank 0's experiment and run ids (from its parent only,
        :data:`LAUNCHED_RUN_ENV`): Lightning derives ``last.ckpt``'s folder from them on every rank, unbroadcast."""
        handed = os.environ.get(LAUNCHED_RUN_ENV, "").split(":")
        if len(handed) == 3 and handed[0] == str(os.getppid()):
            self._experiment_id, self._run_id = handed[1], handed[2]

    def _hand_over_to_launched_ranks(self) -> None:  # they inherit this process's environment
        os.environ[LAUNCHED_RUN_ENV] = f"{os.getpid()}:{self.experiment_id}:{self.run_id}"

    def _store_metric_steps(self) -> set[tuple[str, int]]:
        seen: set[tuple[str, int]] = set()
        try:
            for key in self.experiment.get_run(self.run_id).data.metrics:
                seen |= {(key, m.step) for m in self.experiment.get_metric_history(self.run_id, key)}
        except Exception as err:  # noqa: BLE001  (the store may be down: then nothing is skipped there)
            self._report(f"reading the metric history of run {self.run_id}", err)
        return seen

    @rank_zero_only  # rank 0 owns the run: the other DDP ranks write nothing, locally or to the store
    def reopen(self) -> None:
        """Mark an attached run RUNNING again (a resumed KILLED / FAILED one), once this process owns it."""
        def reopen_run() -> None:
            if self.experiment.get_run(self.run_id).info.status != "RUNNING":
                self.experiment.update_run(self.run_id, status="RUNNING")
                self.experiment.set_tag(self.run_id, END_REASON_TAG, "")  # the previous end's reason is history
        self._guard("update_run", reopen_run)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """End the run (guarded: a store that is gone costs a warning, not the run). See the module docstring."""
        if not self._initialized:
            return
        if status == "success" and self.hold_open and not STOP.requested:
            self.set_tags({TRAINING_TAG: "finished"})
            return
        final = "KILLED" if STOP.requested else _STATUS.get(status, status)
        if final != "FINISHED":
            self.set_tags({END_REASON_TAG: self.end_reason or STOP.reason or f"ended with status {status}"})
        self._guard("set_terminated", self.experiment.set_terminated, self.run_id, final)
        if self._local is not None:
            self._guard_local(self._local.update, status=final, end_time=int(time.time() * 1000),
                              upload_failed=self._upload_failed)
        if self._upload_failed:
            print(f"warning: MLflow store {self.tracking_uri} failed during run {self.run_id}; its local copy "
                  f"{self.run_dir} is complete: upload it with `python -m copra_bench sync --run-dir "
                  f"{self.run_dir}`", file=sys.stderr, flush=True)

    def _report(self, what: str, err: BaseException) -> None:
        if not self._upload_failed:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            warnings.warn(f"MLflow {what} failed ({first}); continuing without the store, everything is kept in "
                          f"{self.local_dir / str(self._experiment_id) / str(self._run_id)}", stacklevel=3)
        self._upload_failed = True

    def _guard(self, what: str, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001  keep training; the local copy has everything
            self._report(what, err)

    def _guard_local(self, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except OSError as err:  # the results themselves are written (and fail loudly) elsewhere
            warnings.warn(f"cannot update the local run record in {self.run_dir}: {err}", stacklevel=3)

    @rank_zero_only
    def log_metrics(self, metrics, step=None) -> None:
        local, store = self._logged_before or (set(), set())
        fresh = {k: v for k, v in metrics.items() if (k, step) not in local}
        if fresh:
            record = {"time": time.time(), "step": step, **{k: _finite(v) for k, v in fresh.items()}}
            with open(self.run_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")
        upload = {k: v for k, v in metrics.items() if (k, step or 0) not in store}
        if upload:
            self._guard("log_metrics", super().log_metrics, upload, step)

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        self._guard("log_hyperparams", super().log_hyperparams, params)

    @rank_zero_only
    def log_params(self, params: dict[str, Any]) -> None:
        """Log flat params with MLflow's own length limit (Lightning's ``log_hyperparams`` cuts at 250)."""
        from mlflow.entities import Param

        if self._local is not None:
            self._guard_local(self._local.add_params, params)
        items = [Param(k, str(v)[:MLFLOW_PARAM_LIMIT]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._guard("log_params", self.experiment.log_batch, run_id=self.run_id, params=items[i:i + 100])

    @rank_zero_only
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._guard("log_artifact", self.experiment.log_artifact, self.run_id, str(path), artifact_path)

    @rank_zero_only
    def set_tags(self, tags: dict[str, Any]) -> None:
        # The store first, then the local record: a tag seen in run.json is in the store too (unless the store is
        # down, which the guard reports), so a process killed in between never leaves the local copy ahead.
        for key, value in tags.items():
            self._guard("set_tag", self.experiment.set_tag, self.run_id, key, str(value))
        if self._local is not None:
            self._guard_local(self._local.update, tags=tags)


def run_dir_of(trainer: L.Trainer) -> Path:
    """The run's local folder: the MLflow run's, else the trainer's log dir."""
    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            return logger.run_dir
    path = Path(trainer.log_dir or trainer.default_root_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def mlflow_logger_of(trainer: L.Trainer) -> MLFlowLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are indexed (``callbacks.0.class_path``)."""
    out: dict[str, Any] = {}
    if isinstance(config, dict):
        for key, value in config.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(config, (list, tuple)) and config and any(isinstance(v, (dict, list)) for v in config):
        for i, value in enumerate(config):
            out.update(flatten(value, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = config
    return out
