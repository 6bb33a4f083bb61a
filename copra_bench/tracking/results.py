"""The one writer of a run's results: ``scores/<test set>.npz``, plots, ``metrics.json``, ``protocol.*`` params, the
data records and the results table, used by the test pass (:class:`~copra_bench.tracking.callbacks.RunArtifacts`)
and by ``python -m copra_bench evaluate``.

Files are written to a local folder first and then uploaded to the run's MLflow artifacts, into the same relative
folder (under ``artifact_root`` when given). Each file is written to a temporary name and renamed into place
(:func:`write_atomic`), so a disk that fills up mid-write never replaces a good file with half of one: the error
names the path and what to do, and what was already written stays. The upload goes through the project's
:class:`~copra_bench.tracking.logger.MLFlowLogger`, or through :class:`AttachedRun` (the same methods) for a run
that ``evaluate`` attaches to afterwards.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from copra_bench.errors import OutputWriteError
from copra_bench.evaluation.assembly import VideoScores, save_scores
from copra_bench.evaluation.evaluator import TestSetResult
from copra_bench.evaluation.plots import save_plots

from .logger import MLFLOW_PARAM_LIMIT, MLFlowLogger


def write_error(path: Path, err: OSError) -> OutputWriteError:
    """The user-facing error for a failed write of ``path``: the path, the cause and what to do."""
    path = Path(path).absolute()
    full = err.errno in (errno.ENOSPC, errno.EDQUOT)
    what = (f"the disk is full (free space on the file system of {path.parent}, or write the run elsewhere"
            if full else "check the folder's permissions and free space, or write the run elsewhere")
    return OutputWriteError(f"cannot write {path}: {err.strerror or err}. {what.capitalize()}: "
                            "trainer.logger.init_args.local_dir / trainer.default_root_dir). The files written before "
                            "it are intact.")


def write_atomic(path: Path, write: Callable[[Path], Any]) -> Path:
    """``write(temporary path)`` next to ``path``, then rename it to ``path`` (atomic on one file system): a failed
    write leaves the previous file, if any, untouched. Raises :class:`OutputWriteError` naming ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise write_error(path, err) from err
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


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
    for r in results:
        if r.skipped:
            document["test"][r.name].update(skipped_videos=len(r.skipped), skipped=list(r.skipped))
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
        extra = {"stride": result.stride, "dataset_family": result.family}
        path = write_atomic(self.folder / "scores" / f"{result.name}.npz",
                            lambda tmp: save_scores(tmp, result.videos, extra=extra))
        self.upload(path)
        return path

    def save_predictions(self, name: str, videos: list[VideoScores]) -> Path:
        path = write_atomic(self.folder / "predictions" / f"{name}.npz", lambda tmp: save_scores(tmp, videos))
        self.upload(path)
        return path

    def save_plots(self, result: TestSetResult) -> list[Path]:
        """Both figures, drawn into a staging folder and renamed into ``plots/<test set>/``."""
        folder = self.folder / "plots" / result.name
        staging = folder.with_name(f".{result.name}.tmp{os.getpid()}")
        plots = []
        try:
            for drawn in save_plots(staging, result.evaluation, result.videos):
                plots.append(write_atomic(folder / drawn.name, lambda tmp, src=drawn: os.replace(src, tmp)))
        except OSError as err:
            raise (err if isinstance(err, OutputWriteError) else write_error(folder, err)) from err
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for plot in plots:
            self.upload(plot)
        return plots

    def write_metrics(self, results: list[TestSetResult], *, protocol: dict[str, Any],
                      conventions: dict[str, str] | None = None, timing: dict[str, float] | None = None) -> Path:
        """``metrics.json`` (see :func:`metrics_document`), uploaded with the ``protocol.*`` params."""
        document = metrics_document(results, protocol=protocol, conventions=conventions, timing=timing)
        path = write_text_atomic(self.folder / "metrics.json", json.dumps(document, indent=2, default=str))
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
        """Scores (unless ``with_scores`` is off), plots of every test set, the videos skipped while decoding, then
        ``metrics.json``."""
        self.record_decode_skips(results)
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
            path = write_text_atomic(self.folder / "skipped_videos.txt",
                                     "".join(f"{key}\t{line}\n" for key, lines in skipped.items() for line in lines))
            self.upload(path)
        for name, videos in evaluated.items():
            self.upload(write_text_atomic(self.folder / "evaluated_videos" / f"{name}.txt",
                                          "".join(f"{v}\n" for v in videos)))

    def record_decode_skips(self, results: list[TestSetResult]) -> None:
        """Add the videos a test pass skipped while decoding (``TestSetResult.skipped``) to ``skipped_videos.txt``
        (after those left out when probing), log the new ``data/skipped_videos`` count, and write each such test
        set's ``evaluated_videos/<test set>.txt`` again without them."""
        added = [f"{r.name}/test\t{line}" for r in results for line in r.skipped]
        if not added:
            return
        path = self.folder / "skipped_videos.txt"
        lines = path.read_text().splitlines() if path.is_file() else []
        lines += [line for line in added if line not in lines]
        self.upload(write_text_atomic(path, "".join(f"{line}\n" for line in lines)))
        if self.logger is not None:
            self.logger.log_metrics({"data/skipped_videos": float(len(lines))})
        for r in results:
            if r.skipped:
                self.upload(write_text_atomic(self.folder / "evaluated_videos" / f"{r.name}.txt",
                                              "".join(f"{v.name}\n" for v in r.videos)))
