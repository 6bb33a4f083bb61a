"""What identifies a run: the hash of its resolved config, and how ``fit --ckpt_path last`` finds the run to resume.

Every run carries its :func:`config_hash` as the MLflow tag ``config_hash`` (set by the CLI; a sweep also tags
``sweep.config_hash`` with the hash it planned, which must be the same). The sweep uses it to skip finished runs, the
CLI to continue the latest unfinished run of the same config (:func:`resumable_run_id`).

It imports nothing of the package, so the CLI and the sweep both import it at module level.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

log = logging.getLogger("copra_bench")

#: MLflow tag holding a run's :func:`config_hash`.
CONFIG_HASH_TAG = "config_hash"

#: Dotted config keys left out of the hash of every subcommand: bookkeeping that does not change what a run computes
#: (where it is logged, which files the config was read from). ``__path__`` (the file a component was read from) is
#: also left out at every depth.
HASH_EXCLUDED = ("trainer.logger", "config", "__path__")

#: Keys left out of the hash of ``fit`` only: resuming a training run does not change what it computes. For
#: ``test``/``predict`` the checkpoint is what is evaluated, so it stays in.
HASH_EXCLUDED_FIT = ("ckpt_path",)


def excluded_keys(subcommand: str) -> tuple[str, ...]:
    """The dotted keys :func:`config_hash` leaves out for ``subcommand``."""
    return HASH_EXCLUDED + (HASH_EXCLUDED_FIT if subcommand == "fit" else ())


def flat_keys(config: Any, prefix: str = "") -> set[str]:
    """Every dotted key of a nested config (lists not descended)."""
    keys = {prefix[:-1]} if prefix else set()
    if isinstance(config, dict):
        for key, value in config.items():
            keys |= flat_keys(value, f"{prefix}{key}.")
    return keys


def config_hash(subcommand: str, config: dict[str, Any]) -> str:
    """16 hex digits identifying what a run computes: the resolved config (plain data, as the parser dumps it) minus
    :func:`excluded_keys`, independent of key order."""
    excluded = excluded_keys(subcommand)

    def strip(node: Any, prefix: str = "") -> Any:
        if isinstance(node, dict):
            return {k: strip(v, f"{prefix}{k}.") for k, v in sorted(node.items())
                    if f"{prefix}{k}" not in excluded and k != "__path__"}
        if isinstance(node, list):
            return [strip(v, prefix) for v in node]
        return node

    text = json.dumps({"subcommand": subcommand, "config": strip(config)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resumable_run_id(tracking_uri: str, experiment_name: str, digest: str) -> str | None:
    """The latest unfinished MLflow run of ``experiment_name`` tagged with config hash ``digest``, or None (logged).

    ``fit --ckpt_path last`` continues that run: its MLflow run and its checkpoint folder
    ``<local_dir>/<experiment>/<run>/checkpoints``, where Lightning then finds ``last.ckpt`` (a run whose training
    finished, tag ``training=finished``, restores its final checkpoint and only tests). A run still held by a live
    process (its ``run.lock``) is refused by the CLI with that process's PID and host.
    """
    from copra_bench.store_uri import (
        tracking_client,  # mlflow is slow to import: only here
    )

    client = tracking_client(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.{CONFIG_HASH_TAG} = '{digest}'",
                              order_by=["attributes.start_time DESC"], max_results=20)
    for run in runs:
        if run.info.status != "FINISHED":
            log.info("resuming MLflow run %s (status %s) of this config", run.info.run_id, run.info.status)
            return run.info.run_id
    log.warning("--ckpt_path last: no unfinished run of this config (hash %s) in experiment %r; starting afresh",
                digest, experiment_name)
    return None
