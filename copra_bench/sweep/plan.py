"""What a sweep plans before anything runs: the grid resolved and hashed, the store of each run, its tags and command.

Shared by the local runner (:mod:`copra_bench.sweep.runner`), the job-array submission
(:mod:`copra_bench.sweep.submit`) and ``sweep --status`` (:mod:`copra_bench.sweep.status`).
"""

from __future__ import annotations

import json
from typing import Any

from copra_bench.sweep.resolve import resolve_runs
from copra_bench.sweep.spec import (
    PlannedRun,
    SweepError,
    SweepSpec,
    cli_value,
    display_value,
)
from copra_bench.sweep.store import TAG_AXES, TAG_HASH, TAG_INDEX, TAG_SWEEP, SweepStore


def logger_args(run: PlannedRun) -> dict[str, Any]:
    return ((run.resolved.get("trainer") or {}).get("logger") or {}).get("init_args") or {}


def store_key(run: PlannedRun) -> tuple[str, str, str | None]:
    init = logger_args(run)
    if not init or "tracking_uri" not in init:
        raise SweepError(f"run {run.index} ({run.label}) has no MLflow logger (trainer.logger must be "
                         "copra_bench.tracking.MLFlowLogger: the sweep finds finished runs in MLflow)")
    return init["tracking_uri"], init.get("experiment_name") or "copra_bench", init.get("artifact_location")


def method_name(run: PlannedRun) -> str | None:
    """``method_name`` of the run's model class (already imported by the parser; nothing is instantiated)."""
    import importlib

    class_path = (run.resolved.get("model") or {}).get("class_path") or ""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(getattr(importlib.import_module(module), name), "method_name", None)
    except (ImportError, AttributeError, ValueError):
        return None


def run_tags(spec: SweepSpec, run: PlannedRun) -> dict[str, str]:
    # The run's own process tags the runs it creates with method/dataset; a run created here gets the method now
    # (the report falls back to the data.name param for the dataset).
    tags = {TAG_SWEEP: spec.sweep_id, TAG_HASH: run.config_hash, TAG_INDEX: str(run.index),
            TAG_AXES: json.dumps({k: display_value(v) for k, v in run.axes.items()}), "subcommand": spec.subcommand}
    method = method_name(run)
    return {**tags, "method": method} if method else tags


def command_of(spec: SweepSpec, run: PlannedRun, *, run_id: str | None = None) -> list[str]:
    """The run's command line. Without ``run_id`` (a scheduler's job) the run creates its own MLflow run, tagged."""
    command = [*spec.launcher, spec.subcommand, *run.args]
    if run_id is not None:
        return command + ["--trainer.logger.init_args.run_id", run_id]
    tags = {**(logger_args(run).get("tags") or {}), **run_tags(spec, run)}
    return command + ["--trainer.logger.init_args.tags", json.dumps(tags)]


def prepare(spec: SweepSpec, *, overrides: dict[str, Any] | None = None, parser: Any = None,
            only: list[str] | None = None) -> list[PlannedRun]:
    """Expand and resolve the grid (``overrides`` are appended to every run, e.g. the tracking URI); ``only``:
    the points matching :func:`select` (chosen before resolving: a slice of a large grid is checked quickly)."""
    runs = select(spec.expand(), only or [])
    for run in runs:
        for key, value in (overrides or {}).items():
            run.args += [f"--{key}", cli_value(value)]
    resolve_runs(spec.subcommand, runs, spec.config_keys, parser=parser)
    return runs


def select(runs: list[PlannedRun], only: list[str]) -> list[PlannedRun]:
    """The runs whose axes match every ``KEY=VALUE`` of ``only`` (``--only``): the key is an axis key or its short
    form (``model``, ``model.rank``), the value as the sweep prints it (a component file by its name)."""
    wanted: list[tuple[str, str]] = []
    for item in only:
        key, sep, value = item.partition("=")
        if not sep:
            raise SweepError(f"--only {item!r}: write KEY=VALUE, e.g. --only model=copra_tiny.yaml")
        wanted.append((key.strip(), value.strip()))
    if not runs:
        return runs
    axes = runs[0].axes
    from copra_bench.sweep.spec import short_key

    for key, _ in wanted:
        if not any(key in (k, short_key(k)) for k in axes):
            raise SweepError(f"--only {key}=...: {key!r} is not an axis of the sweep (axes: "
                             f"{', '.join(short_key(k) for k in axes)})")

    def matches(run: PlannedRun) -> bool:
        return all(any(key in (k, short_key(k)) and value in (display_value(v), cli_value(v))
                       for k, v in run.axes.items()) for key, value in wanted)

    return [run for run in runs if matches(run)]


def unfinished(spec: SweepSpec, runs: list[PlannedRun]) -> tuple[list[PlannedRun], int]:
    """The runs without a FINISHED MLflow run of their config (read-only: creates no store), and how many have one."""
    done: dict[tuple, dict[str, str]] = {}
    todo: list[PlannedRun] = []
    for run in runs:
        key = store_key(run)
        if key not in done:
            done[key] = SweepStore(key[0], key[1], artifact_location=key[2], create=False).finished_hashes(spec.sweep_id)
        if run.config_hash not in done[key]:
            todo.append(run)
    return todo, len(runs) - len(todo)


