"""Experiment tracking: an MLflow logger that keeps a local copy of everything, and the run's artifacts.

* :class:`MLFlowLogger` is Lightning's, plus: the tracking URI is checked before anything runs (an unreachable
  server fails the run at start, not after hours of training); every metric is first appended to
  ``<run_dir>/metrics.jsonl``; a tracking failure during the run is reported once and the run goes on, so what was
  computed is never lost.
* :class:`RunArtifacts` writes the test results (``metrics.json``, per-video scores ``scores/<test set>.npz``) to the
  run directory and uploads them as MLflow artifacts, and prints the results table.
* :class:`ConfigToRun` is LightningCLI's ``SaveConfigCallback``: the resolved config as ``config.yaml`` artifact and
  its flattened keys as MLflow params.
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
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger as _LightningMLFlowLogger

from copra_bench.errors import TrackingError
from copra_bench.evaluation.assembly import save_scores

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

MLFLOW_PARAM_LIMIT = 6000  # MLflow 3 accepts param values up to 6000 characters


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
            raise TrackingError(f"cannot create an MLflow run in {self._tracking_uri}: {err}") from err

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


def _mlflow(trainer: L.Trainer) -> MLFlowLogger | None:
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


class ConfigToRun(SaveConfigCallback):
    """Saves the resolved config to the run directory, as an MLflow artifact and as flattened params."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        path = run_dir_of(trainer) / self.config_filename
        self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=False)
        logger = _mlflow(trainer)
        if logger is None:
            return
        config = self.parser.dump(self.config, skip_none=False, format="json")
        params = flatten(json.loads(config))
        params.update({f"conventions.{k}": v for k, v in pl_module.metric_conventions().items()})
        params.update({f"model.{k}": v for k, v in pl_module.parameter_counts().items()})
        params["data.name"] = trainer.datamodule.name if trainer.datamodule is not None else ""
        params.pop("ckpt_path", None)  # differs between a run and its resumption; recorded as a tag instead
        logger.set_tags({"ckpt_path": self.config.get("ckpt_path")})
        try:  # a resumed run (fit --ckpt_path last) has its params already: MLflow refuses to change them
            logged = set(logger.experiment.get_run(logger.run_id).data.params)
        except Exception:  # the store may be down; the local config.yaml has everything
            logged = set()
        logger.log_params({k: v for k, v in params.items() if k not in logged})
        logger.log_artifact(path)


class RunArtifacts(L.Callback):
    """Writes test/predict results to the run directory (first) and uploads them to MLflow (second).

    Also times the stages (``timing`` in ``metrics.json``: seconds of fit and of each test pass).
    """

    def __init__(self) -> None:
        self.timing: dict[str, float] = {}
        self._started: dict[str, float] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started["fit"] = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.timing["fit_s"] = time.perf_counter() - self._started.pop("fit", time.perf_counter())
        run_dir = self._output_dir(trainer)
        export = getattr(pl_module, "export_trained", None)
        if run_dir is not None and export is not None and trainer.global_step > 0:
            written = export(run_dir / "trained")
            logger = _mlflow(trainer)
            if written is not None and logger is not None:
                for path in sorted(Path(written).iterdir()):
                    logger.log_artifact(path, "trained")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started["test"] = time.perf_counter()

    @staticmethod
    def _output_dir(trainer: L.Trainer) -> Path | None:
        """The run directory on rank 0 (None elsewhere). Every rank must call this: without an MLflow logger,
        ``trainer.log_dir`` is a broadcast under DDP, and a rank-0-only call waits forever for the others."""
        if _mlflow(trainer) is None:
            path = Path(trainer.log_dir or trainer.default_root_dir)
            if trainer.is_global_zero:
                path.mkdir(parents=True, exist_ok=True)
                return path
            return None
        return run_dir_of(trainer) if trainer.is_global_zero else None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs before the module's own on_test_end, which raises for failed test sets: what succeeded is kept.
        run_dir = self._output_dir(trainer)
        if run_dir is not None and getattr(pl_module, "test_results", None):
            self._save_test_results(trainer, pl_module, run_dir)

    def _save_test_results(self, trainer: L.Trainer, pl_module: L.LightningModule, run_dir: Path) -> None:
        from copra_bench.evaluation.plots import save_plots
        from copra_bench.evaluation.protocol import protocol_params

        self.timing["test_s"] = time.perf_counter() - self._started.pop("test", time.perf_counter())
        logger = _mlflow(trainer)
        results = {}
        evaluations = [result.evaluation for result in pl_module.test_results.values()]
        for name, result in pl_module.test_results.items():
            path = save_scores(run_dir / "scores" / f"{name}.npz", result.videos, extra={"stride": result.stride})
            results[name] = result.evaluation.as_json()
            plots = save_plots(run_dir / "plots" / name, result.evaluation, result.videos)
            if logger is not None:
                logger.log_artifact(path, "scores")
                for plot in plots:
                    logger.log_artifact(plot, f"plots/{name}")
        protocol = protocol_params(evaluations, pl_module.evaluation_settings, trainer.datamodule)
        write_metrics_json(run_dir, results, protocol=protocol, conventions=pl_module.metric_conventions(),
                           timing=self.timing, logger=logger)
        print(format_results_table(results, run_dir=run_dir))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run_dir = self._output_dir(trainer)
        if run_dir is None:
            return
        logger = _mlflow(trainer)
        for name, videos in pl_module.predict_results.items():
            path = save_scores(run_dir / "predictions" / f"{name}.npz", videos)
            if logger is not None:
                logger.log_artifact(path, "predictions")
            print(f"predictions for {name} ({len(videos)} videos): {path}")


def log_protocol_params(logger: MLFlowLogger, protocol: dict[str, Any]) -> None:
    """``protocol.<key>`` params; keys the run already has with the same value are skipped (MLflow refuses to
    change a param: a different value is reported, not overwritten)."""
    params = {f"protocol.{k}": str(v) for k, v in protocol.items()}
    try:
        logged = logger.experiment.get_run(logger.run_id).data.params
    except Exception:  # noqa: BLE001  (mlflow raises many types; the store may be down, metrics.json has everything)
        logged = {}
    changed = sorted(k for k, v in params.items() if k in logged and logged[k] != v)
    if changed:
        warnings.warn(f"MLflow run {logger.run_id} already records other values for {', '.join(changed[:5])}; "
                      "kept the old params (metrics.json has this evaluation's)", stacklevel=2)
    logger.log_params({k: v for k, v in params.items() if k not in logged})


def write_metrics_json(run_dir: Path, results: dict[str, dict], *, protocol: dict[str, Any],
                       conventions: dict[str, str], timing: dict[str, float] | None = None,
                       logger: MLFlowLogger | None = None) -> Path:
    """``<run_dir>/metrics.json`` (per test set and step; undefined metrics null with their reason), uploaded with
    the ``protocol.*`` params when a logger is given."""
    path = run_dir / "metrics.json"
    path.write_text(json.dumps({"test": results, "protocol": protocol, "conventions": conventions,
                                "timing": timing or {}}, indent=2, default=str))
    if logger is not None:
        log_protocol_params(logger, protocol)
        logger.log_artifact(path)
    return path


def _pct(value: Any) -> str:
    return "    n/a" if value is None or not math.isfinite(value) else f"{100 * value:7.2f}"


def format_results_table(results: dict[str, dict], *, run_dir: Path | None = None) -> str:
    """Plain-text table: one row per test set (and post-processing step) with the headline metrics in percent."""
    header = (f"{'test set':<28} {'step':<6} {'videos':>7} {'frames':>9} {'anom.%':>7} {'AUC %':>7} {'AP %':>7} "
              f"{'AUC_A %':>7} {'FAR %':>7}")
    lines = ["", "Results (frame level, micro over all test frames; AP: the dataset's primary variant)", header,
             "-" * len(header)]
    for name, entry in results.items():
        steps = {k: v for k, v in entry.items() if k.startswith("step")} or {"-": entry}
        for step, m in steps.items():
            pct = 100.0 * m["num_anomalous_frames"] / max(m["num_frames"], 1)
            lines.append(f"{name:<28} {step:<6} {int(m['num_videos']):>7} {int(m['num_frames']):>9} {pct:>7.2f} "
                         f"{_pct(m['auc'])} {_pct(m['ap'])} {_pct(m.get('auc_a'))} {_pct(m.get('far'))}")
        notes = dict.fromkeys(n for m in steps.values() for n in m.get("notes", []))
        lines += [f"  note: {n}" for n in notes]
    if run_dir is not None:
        lines.append(f"run directory: {run_dir}")
    return "\n".join(lines) + "\n"
