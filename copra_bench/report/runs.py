"""Runs of an MLflow experiment as plain records: params, tags, parsed test metrics, artifact files.

Metric keys ``test/<set>/<step>/<metric>`` (``step1``..``step3``; ``<metric>`` may hold a slash, e.g.
``auc_class/Fighting``) are parsed into ``(set, step, metric)``; a key without a step (``test/<set>/auc``, the format
before post-processing steps existed) counts as ``step1``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from copra_bench.errors import CopraError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

STEP_PATTERN = re.compile(r"^step\d+$")


class ReportError(CopraError, ValueError):
    """The report cannot be built: unknown experiment, no finished runs, unwritable output folder."""


def parse_metric_key(key: str) -> tuple[str, str, str] | None:
    """``test/<set>/<step>/<metric>`` -> ``(set, step, metric)``; None for keys that are not test metrics."""
    parts = key.split("/")
    if len(parts) < 3 or parts[0] != "test" or not parts[1]:
        return None
    if STEP_PATTERN.match(parts[2]):
        if len(parts) < 4:
            return None
        return parts[1], parts[2], "/".join(parts[3:])
    return parts[1], "step1", "/".join(parts[2:])


@dataclass
class RunRecord:
    """One MLflow run as the report sees it.

    Attributes:
        results: ``(test set, step, metric) -> value`` from the ``test/...`` metrics.
        artifact_dir: Local folder of the run's artifacts (None if the store's artifacts are not local).
    """

    run_id: str
    name: str
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    results: dict[tuple[str, str, str], float] = field(default_factory=dict)
    artifact_dir: Path | None = None
    start_time: int = 0
    duplicate_of: str | None = None

    @property
    def method(self) -> str:
        """The ``method`` tag, else the model class name."""
        if self.tags.get("method"):
            return self.tags["method"]
        class_path = self.params.get("model.class_path", "")
        return class_path.rsplit(".", 1)[-1].lower() or "unknown"

    @property
    def dataset(self) -> str:
        """The ``dataset`` tag, else the ``data.name`` param."""
        return self.tags.get("dataset") or self.params.get("data.name") or "unknown"

    @property
    def train_dataset(self) -> str:
        """What the method was trained on: the source of ``<source>_to_<target>``, else the dataset itself."""
        return self.dataset.split("_to_")[0]

    @property
    def test_sets(self) -> list[str]:
        return sorted({s for s, _, _ in self.results})

    @property
    def sweep_id(self) -> str | None:
        return self.tags.get("sweep.id")

    @property
    def error(self) -> str | None:
        return self.tags.get("sweep.error")

    @property
    def exclusion(self) -> str | None:
        """Why the run is not an evaluation that the tables can compare (None when it is one)."""
        if self.status != "FINISHED":
            error = (self.error or "").strip().splitlines()
            return f"status {self.status}" + (f": {error[-1][:80]}" if error else "")
        if self.duplicate_of is not None:
            return f"same config hash as the later run {self.duplicate_of}: counted once"
        if self.tags.get("subcommand") == "predict":
            return "predict run: scores only, nothing evaluated"
        if not self.results:
            return "no test/... metrics logged (not evaluated)"
        if not any(key.startswith(("protocol.", "conventions.")) for key in self.params):
            return "no protocol.* params: its evaluation conventions are unknown, so it is not compared"
        return None


def _local_dir(artifact_uri: str | None) -> Path | None:
    if not artifact_uri:
        return None
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    return None


def load_runs(tracking_uri: str, experiment: str) -> list[RunRecord]:
    """Every run (all statuses) of ``experiment``, oldest first.

    Raises:
        ReportError: the store or the experiment does not exist (the message lists the experiments there).
    """
    from copra_bench.store_uri import (
        tracking_client,  # mlflow is slow to import: only here
    )

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).expanduser().is_file():
        raise ReportError(f"MLflow store {tracking_uri} does not exist; pass --tracking-uri (the runs' "
                          "trainer.logger.init_args.tracking_uri)")
    client = tracking_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ReportError(f"no experiment {experiment!r} in {tracking_uri}; experiments there: {names or 'none'}")
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([found.experiment_id], max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs += list(page)
        token = page.token
        if not token:
            break
    records = []
    for run in runs:
        results = {}
        for key, value in run.data.metrics.items():
            parsed = parse_metric_key(key)
            if parsed is not None:
                results[parsed] = float(value)
        records.append(RunRecord(run_id=run.info.run_id, name=run.info.run_name or run.info.run_id,
                                 status=run.info.status, params=dict(run.data.params), tags=dict(run.data.tags),
                                 results=results, artifact_dir=_local_dir(run.info.artifact_uri),
                                 start_time=run.info.start_time or 0))
    mark_duplicates(records)
    return records


def mark_duplicates(records: list[RunRecord]) -> None:
    """FINISHED runs of one config (same ``config_hash`` tag: same config, seed and subcommand) are one result: the
    latest is kept, the others get :attr:`RunRecord.duplicate_of` (they would count twice in a mean over seeds)."""
    latest: dict[str, RunRecord] = {}
    for record in records:  # oldest first
        digest = record.tags.get("config_hash")
        if record.status == "FINISHED" and digest:
            if digest in latest:
                latest[digest].duplicate_of = record.run_id
            latest[digest] = record
