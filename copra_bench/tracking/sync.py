"""``python -m copra_bench sync --run-dir outputs/<experiment>/<run>``: upload a run's local copy to a tracking store.

For a run whose store went away mid-run (the logger keeps going on its local copy), a run made with no store at all
(``--trainer.logger false``: its results are in the trainer's folder), or a run to copy into another store. What is
uploaded, from the run directory:

* params: ``params.json`` (every param the logger logged), else the flattened ``config.yaml``;
* tags: ``run.json``'s (plus ``synced_from`` and ``run_dir``); name, start and end time and status from ``run.json``;
* metrics with their step history: ``metrics.jsonl`` (one line per ``log_metrics`` call), else the test metrics of
  ``metrics.json`` (step 0);
* artifacts: every other file, in the same relative folder (``checkpoints/`` only with ``--with-checkpoints``: they
  are large and already beside the run).

Syncing is idempotent: the target run is found again (``sync.json`` in the run directory maps each store to its run
id; the run's own id, or the ``synced_from`` tag, otherwise), and params, metric values (key, step, value) and
artifacts it already has are not sent twice. A live run (``run.json`` says RUNNING) is uploaded and left RUNNING.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import yaml

from copra_bench.errors import CopraError, TrackingError
from copra_bench.store_uri import prepare_sqlite_store

from .logger import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    MLFLOW_PARAM_LIMIT,
    absolute_tracking_uri,
    check_tracking_uri,
    flatten,
)

#: Files of the run's tracking record itself (uploaded as params, tags and metrics, not as artifacts).
RECORD_FILES = {"run.json", "params.json", "metrics.jsonl", "run.lock", "sync.json"}
SYNC_FILE = "sync.json"
SYNCED_FROM_TAG = "synced_from"
TERMINAL = ("FINISHED", "FAILED", "KILLED")
_COUNTS = ("num_videos", "num_frames", "num_anomalous_frames", "skipped_videos")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class LocalCopy:
    """What a run directory holds of its tracking record (see the module docstring)."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir).resolve()
        if not self.dir.is_dir():
            raise CopraError(f"{run_dir} is not a directory; pass --run-dir outputs/<experiment>/<run>")
        self.run = _read_json(self.dir / "run.json")
        self.config = self._config()
        if not (self.run or self.config or (self.dir / "metrics.json").is_file()):
            raise CopraError(f"{run_dir} is not a run directory (no run.json, config.yaml or metrics.json)")

    def _config(self) -> dict[str, Any]:
        try:
            loaded = yaml.safe_load((self.dir / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    @property
    def run_id(self) -> str | None:
        return self.run.get("run_id")

    def experiment_name(self) -> str:
        logger = (self.config.get("trainer") or {}).get("logger") or {}
        args = logger.get("init_args", {}) if isinstance(logger, dict) else {}
        return self.run.get("experiment_name") or args.get("experiment_name") or "copra_bench"

    def run_name(self) -> str:
        return self.run.get("run_name") or self.run.get("tags", {}).get("mlflow.runName") or self.dir.name

    def params(self) -> dict[str, str]:
        params = _read_json(self.dir / "params.json")
        if not params and self.config:
            params = flatten(self.config)
            params.pop("ckpt_path", None)  # a tag, as the run records it
        return {k: str(v)[:MLFLOW_PARAM_LIMIT] for k, v in params.items()}

    def tags(self) -> dict[str, str]:
        tags = {k: str(v) for k, v in self.run.get("tags", {}).items() if k != "mlflow.runName"}
        tags.update({SYNCED_FROM_TAG: self.run_id or str(self.dir), "run_dir": str(self.dir)})
        return tags

    def metrics(self) -> list[tuple[str, float, int, int]]:
        """``(key, value, timestamp ms, step)`` of every finite metric value, in logging order."""
        out = []
        path = self.dir / "metrics.jsonl"
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:  # a line cut by a kill
                    continue
                stamp, step = int(1000 * float(record.get("time") or time.time())), int(record.get("step") or 0)
                out += [(k, float(v), stamp, step) for k, v in record.items()
                        if k not in ("time", "step") and isinstance(v, (int, float)) and math.isfinite(v)]
            return out
        stamp = int(1000 * (self.dir / "metrics.json").stat().st_mtime) if (self.dir / "metrics.json").is_file() else 0
        for name, entry in _read_json(self.dir / "metrics.json").get("test", {}).items():
            for step, values in entry.items():
                if not (step.startswith("step") and isinstance(values, dict)):
                    continue
                flat = {k: v for k, v in values.items() if k not in _COUNTS}
                flat.update({f"auc_class/{c}": v for c, v in (values.get("auc_class") or {}).items()})
                out += [(f"test/{name}/{step}/{k}", float(v), stamp, 0) for k, v in flat.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        return out

    def artifacts(self, *, with_checkpoints: bool) -> list[Path]:
        """Every result file (relative paths), without the tracking record, hidden and temporary files."""
        files = []
        for path in sorted(self.dir.rglob("*")):
            relative = path.relative_to(self.dir)
            if not path.is_file() or any(part.startswith(".") for part in relative.parts):
                continue
            if relative.as_posix() in RECORD_FILES or (relative.parts[0] == "checkpoints" and not with_checkpoints):
                continue
            files.append(relative)
        return files

    def status(self) -> str:
        """The status the synced run gets: ``run.json``'s; without one, FINISHED when the test was written."""
        status = self.run.get("status")
        if status:
            return status
        return "FINISHED" if (self.dir / "metrics.json").is_file() else "FAILED"


def _existing_artifacts(client: Any, run_id: str, path: str | None = None) -> dict[str, int | None]:
    found: dict[str, int | None] = {}
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found.update(_existing_artifacts(client, run_id, item.path))
        else:
            found[item.path] = item.file_size
    return found


def _target_run(client: Any, local: LocalCopy, uri: str, experiment: str) -> tuple[str, bool]:
    """The run in the store this copy goes to, and whether it was created now."""
    from mlflow.exceptions import MlflowException

    known = [_read_json(local.dir / SYNC_FILE).get(uri), local.run_id]
    for run_id in filter(None, known):
        try:
            client.get_run(run_id)
            return run_id, False
        except MlflowException:
            pass
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(
        experiment, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    origin = local.tags()[SYNCED_FROM_TAG].replace("'", "\\'")
    previous = client.search_runs([experiment_id], filter_string=f"tags.{SYNCED_FROM_TAG} = '{origin}'",
                                  max_results=1)
    if previous:
        return previous[0].info.run_id, False
    run = client.create_run(experiment_id, start_time=local.run.get("start_time"), run_name=local.run_name())
    return run.info.run_id, True


def sync_run(run_dir: Path, *, tracking_uri: str | None = None, experiment: str | None = None,
             with_checkpoints: bool = False) -> dict[str, Any]:
    """Upload ``run_dir``'s local copy (see the module docstring); what was sent, as counts."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    local = LocalCopy(run_dir)
    uri = absolute_tracking_uri(tracking_uri or local.run.get("tracking_uri") or "sqlite:///mlflow.db")
    check_tracking_uri(uri)
    prepare_sqlite_store(uri)
    client = MlflowClient(uri)
    try:
        run_id, created = _target_run(client, local, uri, experiment or local.experiment_name())
        data = client.get_run(run_id).data
        params = local.params()
        changed = sorted(k for k, v in params.items() if k in data.params and data.params[k] != v)
        new_params = [Param(k, v) for k, v in params.items() if k not in data.params]
        tags = [RunTag(k, v) for k, v in local.tags().items() if data.tags.get(k) != v]
        have = {(m.key, m.step, m.value) for key in data.metrics for m in client.get_metric_history(run_id, key)}
        metrics = [Metric(k, v, t, s) for k, v, t, s in local.metrics() if (k, s, v) not in have]
        for i in range(0, max(len(new_params), len(tags), len(metrics)), 100):
            client.log_batch(run_id, metrics=metrics[i:i + 100], params=new_params[i:i + 100], tags=tags[i:i + 100])
        existing = _existing_artifacts(client, run_id)
        uploaded = 0
        for relative in local.artifacts(with_checkpoints=with_checkpoints):
            path = local.dir / relative
            if existing.get(relative.as_posix(), -1) == path.stat().st_size:
                continue
            folder = relative.parent.as_posix()
            client.log_artifact(run_id, str(path), None if folder == "." else folder)
            uploaded += 1
        status = local.status()
        if status in TERMINAL and client.get_run(run_id).info.status != status:
            client.set_terminated(run_id, status, local.run.get("end_time"))
    except CopraError:
        raise
    except Exception as err:  # (mlflow raises many types; the store may be read-only or gone)
        raise TrackingError(f"syncing {local.dir} to {uri} failed: {err}. Nothing local was changed; run sync "
                            "again once the store is writable (it sends only what the store lacks)") from err
    mapping = _read_json(local.dir / SYNC_FILE)
    mapping[uri] = run_id
    (local.dir / SYNC_FILE).write_text(json.dumps(mapping, indent=1))
    if changed:
        print(f"warning: run {run_id} already records other values for {', '.join(changed[:5])}; kept them "
              "(MLflow params cannot change)")
    return {"run_id": run_id, "created": created, "params": len(new_params), "metrics": len(metrics),
            "artifacts": uploaded, "status": status}


def sync_command(argv: list[str]) -> int:
    """Entry of ``python -m copra_bench sync`` (errors are reported by the CLI's ``main``)."""
    parser = argparse.ArgumentParser(prog="python -m copra_bench sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, help="the run's local copy: outputs/<experiment>/<run>")
    parser.add_argument("--tracking-uri", help="the store to upload to (default: the run's own, else "
                                               "sqlite:///mlflow.db)")
    parser.add_argument("--experiment", help="experiment of a run the store does not have yet (default: the run's)")
    parser.add_argument("--with-checkpoints", action="store_true", help="also upload checkpoints/ (large)")
    args = parser.parse_args(argv)
    sent = sync_run(Path(args.run_dir), tracking_uri=args.tracking_uri, experiment=args.experiment,
                    with_checkpoints=args.with_checkpoints)
    print(f"synced {args.run_dir} to {'new ' if sent['created'] else ''}run {sent['run_id']} "
          f"(status {sent['status']}): {sent['params']} params, {sent['metrics']} metric values, "
          f"{sent['artifacts']} artifacts uploaded; what the store already had was not sent again")
    return 0
