"""The MLflow logger: Lightning's, with a checked store, a local copy of every metric and a failure-tolerant upload.

:class:`MLFlowLogger` checks the tracking URI before anything runs (an unreachable server fails the run at start, not
after hours of training); every metric is first appended to ``<run_dir>/metrics.jsonl``; a tracking failure during
the run is reported once and the run goes on, so what was computed is never lost.
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger as _LightningMLFlowLogger

from copra_bench.errors import TrackingError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

MLFLOW_PARAM_LIMIT = 6000  # MLflow 3 accepts param values up to 6000 characters

#: Experiment tag MLflow 3's UI reads to choose an experiment's page, and the value that opens the runs table
#: ("custom model development"; without it the UI guesses GenAI and opens an empty traces overview). MLflow 3.17's UI
#: lets its "GenAI | Model training" switch (or ``?workflowType=machine_learning`` in the URL) decide instead: the
#: README gives that URL. The tag stays right for both, and for any other client that reads it.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def check_tracking_uri(uri: str, *, timeout: float = 5.0) -> None:
    """Fail fast with a clear message if ``uri`` cannot be used as an MLflow tracking store."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
                if response.status >= 400:
                    raise TrackingError(f"MLflow tracking server {uri} answered HTTP {response.status} on /health")
        except (urllib.error.URLError, OSError) as err:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({err}). Start it (`mlflow server --host 127.0.0.1 "
                "--port 5000`), fix trainer.logger.init_args.tracking_uri, or use the local default "
                "sqlite:///mlflow.db") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).expanduser().resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(f"MLflow store {uri}: folder {folder} does not exist or is not writable; "
                                "create it or point trainer.logger.init_args.tracking_uri elsewhere")
    elif uri.startswith("file:") and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
        raise TrackingError(f"MLflow 3 keeps the file store {uri} read-only ('maintenance mode'); use "
                            "sqlite:///mlflow.db, or set MLFLOW_ALLOW_FILE_STORE=true")


def absolute_tracking_uri(uri: str) -> str:
    """``sqlite:///mlflow.db`` -> ``sqlite:////abs/path/mlflow.db``: the store the user meant (the working
    directory's), recorded unambiguously; MLflow also caches stores by URI, so a relative one would keep pointing at
    the first working directory in a process that runs several jobs."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        return prefix + str(Path(uri[len(prefix):]).expanduser().resolve())
    return uri


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

    # Lightning's MLFlowLogger keeps these settings in private attributes and reads them when it creates the run (in
    # ``experiment``). The properties below are the project's only access to them, so the rest of the code depends on
    # this class's public interface, not on Lightning's internals.

    @property
    def experiment(self) -> Any:
        """Lightning's MLflow client; the first access also marks the experiment as a model-development one
        (:data:`EXPERIMENT_KIND_TAG`), unless it already says what it is, so the MLflow UI opens on its runs."""
        client = super().experiment
        if not self._kind_checked and self._experiment_id is not None:
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
        """Local folder of this run (created on first use)."""
        path = self.local_dir / str(self.experiment_id) / str(self.run_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(self) -> None:
        """Create the run now, so a store that cannot be written fails before any work is done."""
        try:
            _ = self.experiment, self.run_id
        except Exception as err:  # mlflow raises many types here
            raise TrackingError(f"cannot create an MLflow run in {self.tracking_uri}: {err}") from err

    def _guard(self, what: str, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as err:  # keep training; the local copy has everything
            if not self._upload_failed:
                warnings.warn(f"MLflow {what} failed ({err}); continuing, results are kept in {self.run_dir}",
                              stacklevel=2)
            self._upload_failed = True

    def log_metrics(self, metrics, step=None) -> None:
        record = {"time": time.time(), "step": step, **{k: _finite(v) for k, v in metrics.items()}}
        with open(self.run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        self._guard("log_metrics", super().log_metrics, metrics, step)

    def log_hyperparams(self, params) -> None:
        self._guard("log_hyperparams", super().log_hyperparams, params)

    def log_params(self, params: dict[str, Any]) -> None:
        """Log flat params with MLflow's own length limit (Lightning's ``log_hyperparams`` cuts at 250)."""
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MLFLOW_PARAM_LIMIT]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._guard("log_params", self.experiment.log_batch, run_id=self.run_id, params=items[i:i + 100])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._guard("log_artifact", self.experiment.log_artifact, self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self._guard("set_tag", self.experiment.set_tag, self.run_id, key, str(value))


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
