"""The local copy of a run's tracking record, next to its results: what ``sync`` uploads when the store was down.

``<local_dir>/<experiment id>/<run id>/`` holds, besides the results (``metrics.json``, ``scores/``, ``plots/``,
``trained/``, ``checkpoints/``, ``config.yaml``):

* ``run.json``: ``run_id``, ``run_name``, ``experiment_name``, ``experiment_id``, ``tracking_uri``, ``status``
  (``RUNNING`` / ``FINISHED`` / ``FAILED`` / ``KILLED``), ``start_time`` / ``end_time`` (ms since the epoch, as MLflow),
  ``tags`` (every tag set through the logger, the end reason included) and ``upload_failed`` (true once a call to the
  store failed: the store is missing something the local copy has);
* ``params.json``: every param logged through the logger (``key -> value`` as strings);
* ``metrics.jsonl``: one line per ``log_metrics`` call, ``{"time": s, "step": n, "<key>": value, ...}``
  (non-finite values as null); a resumed run adds only the (key, step) pairs not already there.

Every file is rewritten atomically (temporary file, then rename), so a kill leaves the previous complete version.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"
PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.jsonl"


def write_json_atomic(path: Path, document: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=1, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class LocalRunRecord:
    """Reads and updates ``run.json`` / ``params.json`` / ``metrics.jsonl`` of one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    @property
    def run(self) -> dict[str, Any]:
        return read_json(self.run_dir / RUN_FILE)

    def update(self, *, tags: dict[str, Any] | None = None, **fields: Any) -> None:
        """Merge ``fields`` and ``tags`` into ``run.json`` (created on first use)."""
        document = self.run
        document.update({k: v for k, v in fields.items() if v is not None})
        if tags:
            document["tags"] = {**document.get("tags", {}), **{k: str(v) for k, v in tags.items()}}
        document.setdefault("start_time", int(time.time() * 1000))
        write_json_atomic(self.run_dir / RUN_FILE, document)

    def add_params(self, params: dict[str, Any]) -> None:
        path = self.run_dir / PARAMS_FILE
        write_json_atomic(path, {**read_json(path), **{k: str(v) for k, v in params.items()}})

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / METRICS_FILE, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def logged_metric_steps(self) -> set[tuple[str, int | None]]:
        """Every (key, step) already in ``metrics.jsonl`` (a partial last line, cut by a kill, is ignored)."""
        seen: set[tuple[str, int | None]] = set()
        path = self.run_dir / METRICS_FILE
        try:
            text = path.read_text()
        except OSError:
            return seen
        if text and not text.endswith("\n"):  # cut mid-line by a kill: drop the partial record before appending
            text = text[:text.rfind("\n") + 1]
            path.write_text(text)
        lines = text.splitlines()
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            step = record.get("step")
            seen |= {(k, step) for k in record if k not in ("time", "step")}
        return seen
