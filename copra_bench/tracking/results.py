"""The one writer of a run's results: ``scores/<test set>.npz``, plots, ``metrics.json``, ``protocol.*`` params, the
data records and the results table, used by the test pass (:class:`~copra_bench.tracking.callbacks.RunArtifacts`)
and by ``python -m copra_bench evaluate``.

Files are written to a local folder first and then uploaded to the run's MLflow artifacts, into the same relative
folder (under ``artifact_root`` when given). The upload goes through the project's
:class:`~copra_bench.tracking.logger.MLFlowLogger`, or through :class:`AttachedRun` (the same methods) for a run
that ``evaluate`` attaches to afterwards.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

from copra_bench.evaluation.assembly import VideoScores, save_scores
from copra_bench.evaluation.evaluator import TestSetResult
from copra_bench.evaluation.plots import save_plots

from .logger import MLFLOW_PARAM_LIMIT, MLFlowLogger


class AttachedRun:
    """An existing MLflow run, with the upload methods of :class:`MLFlowLogger` (``evaluate`` logs into runs that
    no trainer holds). ``experiment`` is the ``MlflowClient``, as the logger's."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.experiment = client
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            self.experiment.log_batch(self.run_id, metrics=items[i:i + 500])

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MLFLOW_PARAM_LIMIT]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.experiment.log_batch(self.run_id, params=items[i:i + 100])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.experiment.log_artifact(self.run_id, str(path), artifact_path)


def log_protocol_params(logger: MLFlowLogger | AttachedRun, protocol: dict[str, Any]) -> None:
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


def metrics_document(results: list[TestSetResult], *, protocol: dict[str, Any],
                     conventions: dict[str, str] | None = None, timing: dict[str, float] | None = None) -> dict:
    """What ``metrics.json`` holds: per test set and step (undefined metrics null with their reason), the protocol,
    and for a test pass the conventions and timing."""
    document: dict[str, Any] = {"test": {r.name: r.evaluation.as_json() for r in results}, "protocol": protocol}
    if conventions is not None:
        document.update(conventions=conventions, timing=timing or {})
    return document


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


class RunResultsWriter:
    """Writes results into ``folder`` and uploads each file to ``logger``'s run (when given).

    Args:
        folder: Local folder (the run directory; a temporary one for ``evaluate`` on a run id).
        logger: :class:`MLFlowLogger` or :class:`AttachedRun`; None writes the local files only.
        artifact_root: Artifact folder the files go under (``evaluate/<preset>``); default the run's root.
    """

    def __init__(self, folder: Path, logger: MLFlowLogger | AttachedRun | None = None, *,
                 artifact_root: str = "") -> None:
        self.folder = Path(folder)
        self.logger = logger
        self.artifact_root = artifact_root

    def upload(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload one file into ``artifact_path`` (default: its folder relative to :attr:`folder`)."""
        if self.logger is None:
            return
        if artifact_path is None:
            relative = path.parent.relative_to(self.folder).as_posix()
            parts = [p for p in (self.artifact_root, "" if relative == "." else relative) if p]
            artifact_path = "/".join(parts) or None
        self.logger.log_artifact(path, artifact_path)

    def save_scores(self, result: TestSetResult) -> Path:
        """``scores/<test set>.npz`` with ``meta/stride`` and ``meta/dataset_family`` (``evaluate`` reads both)."""
        path = save_scores(self.folder / "scores" / f"{result.name}.npz", result.videos,
                           extra={"stride": result.stride, "dataset_family": result.family})
        self.upload(path)
        return path

    def save_predictions(self, name: str, videos: list[VideoScores]) -> Path:
        path = save_scores(self.folder / "predictions" / f"{name}.npz", videos)
        self.upload(path)
        return path

    def save_plots(self, result: TestSetResult) -> list[Path]:
        plots = save_plots(self.folder / "plots" / result.name, result.evaluation, result.videos)
        for plot in plots:
            self.upload(plot)
        return plots

    def write_metrics(self, results: list[TestSetResult], *, protocol: dict[str, Any],
                      conventions: dict[str, str] | None = None, timing: dict[str, float] | None = None) -> Path:
        """``metrics.json`` (see :func:`metrics_document`), uploaded with the ``protocol.*`` params."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "metrics.json"
        document = metrics_document(results, protocol=protocol, conventions=conventions, timing=timing)
        path.write_text(json.dumps(document, indent=2, default=str))
        if self.logger is not None:
            log_protocol_params(self.logger, protocol)
            self.upload(path)
        return path

    def log_metrics(self, results: list[TestSetResult]) -> None:
        """Every defined metric of every step (``test/<set>/<step>/<metric>``); a test pass logs them through
        Lightning instead, ``evaluate`` through this."""
        if self.logger is not None:
            self.logger.log_metrics({k: v for r in results for k, v in r.evaluation.mlflow_metrics().items()}, 0)

    def save_test(self, results: list[TestSetResult], *, protocol: dict[str, Any],
                  conventions: dict[str, str] | None = None, timing: dict[str, float] | None = None,
                  with_scores: bool = True) -> Path:
        """Scores (unless ``with_scores`` is off), plots of every test set, then ``metrics.json``."""
        for result in results:
            if with_scores:
                self.save_scores(result)
            self.save_plots(result)
        return self.write_metrics(results, protocol=protocol, conventions=conventions, timing=timing)

    def record_data(self, skipped: dict[str, list[str]], evaluated: dict[str, list[str]]) -> None:
        """``data/skipped_videos`` (the count), ``skipped_videos.txt`` when any, and for every test set
        ``evaluated_videos/<test set>.txt`` (exactly the videos that enter its metric)."""
        count = sum(len(v) for v in skipped.values())
        if self.logger is not None:
            self.logger.log_metrics({"data/skipped_videos": float(count)})
        if count:
            path = self.folder / "skipped_videos.txt"
            path.write_text("".join(f"{key}\t{line}\n" for key, lines in skipped.items() for line in lines))
            self.upload(path)
        if evaluated:
            folder = self.folder / "evaluated_videos"
            folder.mkdir(parents=True, exist_ok=True)
            for name, videos in evaluated.items():
                path = folder / f"{name}.txt"
                path.write_text("".join(f"{v}\n" for v in videos))
                self.upload(path)
