"""Experiment tracking: the MLflow logger (:mod:`.logger`), the callbacks that write a run's config and results
(:mod:`.callbacks`), and the one writer of a run's results: scores, plots, ``metrics.json``, the results table
(:mod:`.results`)."""

from .callbacks import ConfigToRun, RunArtifacts
from .logger import (
    MLFLOW_PARAM_LIMIT,
    MLFlowLogger,
    absolute_tracking_uri,
    check_tracking_uri,
    flatten,
    mlflow_logger_of,
    run_dir_of,
)
from .results import AttachedRun, RunResultsWriter, format_results_table, log_protocol_params, metrics_document

__all__ = ["MLFLOW_PARAM_LIMIT", "AttachedRun", "ConfigToRun", "MLFlowLogger", "RunArtifacts", "RunResultsWriter",
           "absolute_tracking_uri", "check_tracking_uri", "flatten", "format_results_table", "log_protocol_params",
           "metrics_document", "mlflow_logger_of", "run_dir_of"]
