"""The sweep file's ``launcher``: a command prefix (list or string), or a submitit job array (a mapping).

::

    launcher:                          # submit the unfinished points as one job array (copra_bench.sweep.submit)
      kind: submitit
      cluster: slurm                   # slurm | local (this machine, one process per job) | debug (in this process)
      partition: gpu                   # SLURM partition
      gpus_per_node: 1                 # GPUs per job (per run)
      nodes: 1
      tasks_per_node: 1                # one task: the job starts the run, which starts its own DDP processes
      cpus_per_task: 8
      mem_gb: 64
      timeout_min: 1440                # the job's time limit; it is requeued from last.ckpt when it runs out
      array_parallelism: 16            # jobs of the array running at once (SLURM's %N)
      max_requeues: 10                 # preemptions / time-outs a point may take before its run is FAILED
      folder: outputs/submitit/%j      # submitit's pickles and job logs (default outputs/sweeps/<sweep>/submitit)
      slurm_additional_parameters: {account: myproject, qos: normal}
      setup: ["module load cuda/12.1", "source .venv/bin/activate"]   # shell lines before each job
      command: [python, -m, copra_bench]                               # the run's command prefix in the job

Keys and their types are checked here; a wrong one is an error naming the sweep file and the key.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from copra_bench.errors import CopraError

CLUSTERS = ("slurm", "local", "debug")


class LauncherError(CopraError, ValueError):
    """The sweep file's ``launcher`` block is malformed (the message names the file and the key)."""


@dataclass
class SubmititLauncher:
    """A parsed ``launcher: {kind: submitit, ...}`` block (see the module docstring)."""

    cluster: str = "slurm"
    partition: str | None = None
    gpus_per_node: int = 1
    nodes: int = 1
    tasks_per_node: int = 1
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int = 60
    array_parallelism: int = 256
    max_requeues: int = 3
    folder: str | None = None
    slurm_additional_parameters: dict[str, Any] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "copra_bench"])

    def executor_parameters(self) -> dict[str, Any]:
        """``AutoExecutor.update_parameters`` keywords (generic ones, plus the ``slurm_`` / ``local_`` ones)."""
        params: dict[str, Any] = {"timeout_min": self.timeout_min, "gpus_per_node": self.gpus_per_node,
                                  "nodes": self.nodes, "tasks_per_node": self.tasks_per_node}
        if self.cpus_per_task is not None:
            params["cpus_per_task"] = self.cpus_per_task
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        if self.cluster == "slurm":
            params["slurm_array_parallelism"] = self.array_parallelism
            if self.partition:
                params["slurm_partition"] = self.partition
            if self.slurm_additional_parameters:
                params["slurm_additional_parameters"] = dict(self.slurm_additional_parameters)
            if self.setup:
                params["slurm_setup"] = list(self.setup)
        elif self.cluster == "local" and self.setup:
            params["local_setup"] = list(self.setup)
        return params


#: key -> (accepted types, what to write)
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "cluster": ((str,), f"one of {CLUSTERS}"), "partition": ((str,), "a partition name"),
    "gpus_per_node": ((int,), "an integer >= 0"), "nodes": ((int,), "an integer >= 1"),
    "tasks_per_node": ((int,), "an integer >= 1"), "cpus_per_task": ((int,), "an integer >= 1"),
    "mem_gb": ((int, float), "a number of GB"), "timeout_min": ((int,), "minutes, an integer >= 1"),
    "array_parallelism": ((int,), "an integer >= 1"), "max_requeues": ((int,), "an integer >= 0"),
    "folder": ((str,), "a folder path"), "slurm_additional_parameters": ((dict,), "a mapping of sbatch options"),
    "setup": ((list,), "a list of shell lines"), "command": ((list, str), "a command prefix (list or string)"),
}
_MINIMUM = {"gpus_per_node": 0, "nodes": 1, "tasks_per_node": 1, "cpus_per_task": 1, "mem_gb": 0,
            "timeout_min": 1, "array_parallelism": 1, "max_requeues": 0}


def parse_launcher(raw: Any, *, where: str) -> tuple[list[str], SubmititLauncher | None]:
    """The command prefix of every run, and the submitit block when the launcher is one."""
    default = [sys.executable, "-m", "copra_bench"]
    if raw is None or raw == [] or raw == "":
        return default, None
    if isinstance(raw, str):
        return raw.split(), None
    if isinstance(raw, list):
        return [str(x) for x in raw], None
    if not isinstance(raw, dict):
        raise LauncherError(f"{where}: 'launcher' must be a command prefix (list or string) or a mapping "
                            "{kind: submitit, ...}")
    if raw.get("kind") != "submitit":
        raise LauncherError(f"{where}: launcher.kind must be 'submitit' (got {raw.get('kind')!r}); a plain command "
                            "prefix is written as a list, e.g. launcher: [srun, python, -m, copra_bench]")
    values = {k: v for k, v in raw.items() if k != "kind"}
    unknown = sorted(set(values) - set(_TYPES))
    if unknown:
        raise LauncherError(f"{where}: unknown launcher key(s) {unknown}; allowed: {sorted(_TYPES)}")
    for key, value in values.items():
        types, what = _TYPES[key]
        if value is None and key in ("partition", "cpus_per_task", "mem_gb", "folder"):
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            raise LauncherError(f"{where}: launcher.{key} must be {what}, got {value!r}")
        if key in _MINIMUM and value < _MINIMUM[key]:
            raise LauncherError(f"{where}: launcher.{key} must be {what}, got {value!r}")
    if values.get("cluster", "slurm") not in CLUSTERS:
        raise LauncherError(f"{where}: launcher.cluster must be one of {CLUSTERS}, got {values['cluster']!r}")
    if not all(isinstance(line, str) for line in values.get("setup", [])):
        raise LauncherError(f"{where}: launcher.setup must be a list of shell lines (strings)")
    if values.get("cluster") == "local" and values.get("nodes", 1) > 1:
        raise LauncherError(f"{where}: launcher.nodes must be 1 with cluster: local (submitit's local executor "
                            "runs on this machine)")
    command = values.pop("command", None)
    launcher = SubmititLauncher(**values)
    if command is not None:
        launcher.command = command.split() if isinstance(command, str) else [str(x) for x in command]
    return launcher.command, launcher
