"""A run's results outside MLflow's metric stream: ``metrics.json``, ``protocol.*`` params and the text table."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from .logger import MLFlowLogger


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
