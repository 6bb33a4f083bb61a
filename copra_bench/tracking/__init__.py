"""Experiment tracking: the MLflow logger (:mod:`.logger`), the callbacks that write a run's config and results
(:mod:`.callbacks`), and ``metrics.json`` / the results table (:mod:`.results`)."""

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
from .results import format_results_table, log_protocol_params, write_metrics_json

__all__ = ["MLFLOW_PARAM_LIMIT", "ConfigToRun", "MLFlowLogger", "RunArtifacts", "absolute_tracking_uri",
           "check_tracking_uri", "flatten", "format_results_table", "log_protocol_params", "mlflow_logger_of",
           "run_dir_of", "write_metrics_json"]
