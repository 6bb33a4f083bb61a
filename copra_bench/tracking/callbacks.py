"""Callbacks that put a run's config and results where they belong.

* :class:`ConfigToRun` is LightningCLI's ``SaveConfigCallback``: the resolved config as ``config.yaml`` artifact and
  its flattened keys as MLflow params.
* :class:`RunArtifacts` is the run's :class:`~copra_bench.evaluation.evaluator.ResultSink`: it writes the test results
  (``metrics.json``, per-video scores ``scores/<test set>.npz``, plots) to the run directory and uploads them as
  MLflow artifacts, prints the results table, and records the DataModule's skipped and evaluated videos.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback

from copra_bench.evaluation.assembly import VideoScores
from copra_bench.evaluation.evaluator import ResultSink, TestOutcome

from .logger import flatten, mlflow_logger_of, run_dir_of
from .results import RunResultsWriter, format_results_table


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


class RunArtifacts(L.Callback, ResultSink):
    """Writes the run's results to the run directory (first) and uploads them to MLflow (second), through
    :class:`~copra_bench.tracking.results.RunResultsWriter`: the test outcome and predictions the module's evaluator
    hands over, the DataModule's records (skipped and evaluated videos) when a stage is set up, and what the method
    exports when fit ends.

    Also times the stages (``timing`` in ``metrics.json``: seconds of fit and of each test pass).
    """

    def __init__(self) -> None:
        self.timing: dict[str, float] = {}
        self._started: dict[str, float] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Lightning sets the DataModule up just before this hook: its records are complete for the stage.
        logger = mlflow_logger_of(trainer)
        records_of = getattr(trainer.datamodule, "records_to_log", None)
        if logger is None or records_of is None or not trainer.is_global_zero:
            return
        records = records_of()
        RunResultsWriter(logger.run_dir, logger).record_data(records.skipped, records.evaluated)

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

    def save_test_outcome(self, trainer: L.Trainer, outcome: TestOutcome) -> None:
        run_dir = self._output_dir(trainer)
        if run_dir is None or not outcome.results:
            return
        self.timing["test_s"] = time.perf_counter() - self._started.pop("test", time.perf_counter())
        results = list(outcome.results.values())
        RunResultsWriter(run_dir, mlflow_logger_of(trainer)).save_test(
            results, protocol=outcome.protocol, conventions=outcome.conventions, timing=self.timing)
        print(format_results_table({r.name: r.evaluation.as_json() for r in results}, run_dir=run_dir))

    def save_predictions(self, trainer: L.Trainer, predictions: dict[str, list[VideoScores]]) -> None:
        run_dir = self._output_dir(trainer)
        if run_dir is None:
            return
        writer = RunResultsWriter(run_dir, mlflow_logger_of(trainer))
        for name, videos in predictions.items():
            path = writer.save_predictions(name, videos)
            print(f"predictions for {name} ({len(videos)} videos): {path}")
