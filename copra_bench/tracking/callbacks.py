"""Callbacks that put a run's config and results where they belong.

* :class:`ConfigToRun` is LightningCLI's ``SaveConfigCallback``: the resolved config as ``config.yaml`` artifact and
  its flattened keys as MLflow params.
* :class:`RunArtifacts` writes the test results (``metrics.json``, per-video scores ``scores/<test set>.npz``) to the
  run directory and uploads them as MLflow artifacts, and prints the results table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback

from copra_bench.evaluation.assembly import save_scores

from .logger import flatten, mlflow_logger_of, run_dir_of
from .results import format_results_table, write_metrics_json


class ConfigToRun(SaveConfigCallback):
    """Saves the resolved config to the run directory, as an MLflow artifact and as flattened params."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        path = run_dir_of(trainer) / self.config_filename
        self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=False)
        logger = mlflow_logger_of(trainer)
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
            logger = mlflow_logger_of(trainer)
            if written is not None and logger is not None:
                for path in sorted(Path(written).iterdir()):
                    logger.log_artifact(path, "trained")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started["test"] = time.perf_counter()

    @staticmethod
    def _output_dir(trainer: L.Trainer) -> Path | None:
        """The run directory on rank 0 (None elsewhere). Every rank must call this: without an MLflow logger,
        ``trainer.log_dir`` is a broadcast under DDP, and a rank-0-only call waits forever for the others."""
        if mlflow_logger_of(trainer) is None:
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
        logger = mlflow_logger_of(trainer)
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
        logger = mlflow_logger_of(trainer)
        for name, videos in pl_module.predict_results.items():
            path = save_scores(run_dir / "predictions" / f"{name}.npz", videos)
            if logger is not None:
                logger.log_artifact(path, "predictions")
            print(f"predictions for {name} ({len(videos)} videos): {path}")
