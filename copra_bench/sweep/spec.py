"""Sweep files: a base config plus grid axes, expanded into one command line per run.

A sweep file (``configs/sweeps/<name>.yaml``)::

    sweep: table6_granularity          # sweep id (default: the file name without .yaml)
    subcommand: fit                    # fit | validate | test | predict
    configs: [configs/cross_domain.yaml]        # --config files, in order
    set:                               # fixed overrides, applied after the configs, in order
      model: configs/model/copra_tiny.yaml       # a whole component file
      trainer.logger.init_args.experiment_name: ablations
    grid:                              # cartesian product of every axis
      model.init_args.granularity: [window, chunk, video]
      seed_everything: [0, 1, 2]
      "data.init_args.source.init_args.domain,data.init_args.target.init_args.domain": [[A, B], [B, A]]  # zipped
    exclude:                           # optional: drop combinations matching all keys of an entry
      - {model.init_args.granularity: video, seed_everything: 2}
    launcher: [python, -m, copra_bench]         # optional command prefix (default: this Python), or a
                                                # submitit job array: {kind: submitit, ...} (see launcher_spec)

Every key is a config key of ``python -m copra_bench <subcommand>`` (checked by parsing each run's config before
anything runs, see :mod:`copra_bench.sweep.resolve`), except the axis ``configs``: its values are config files (or
lists of them) added after the sweep's ``configs`` of that run, e.g. one experiment file per cross-domain matrix cell.
A key joining several config keys with commas is a *zipped* axis: its values are lists giving one value per key.
Relative paths (configs, and values ending in ``.yaml``) are
looked up in the current directory, then in the sweep file's folder and its parents, and made absolute, so emitted
commands run from anywhere.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from copra_bench.errors import CopraError
from copra_bench.sweep.launcher_spec import SubmititLauncher, parse_launcher

SUBCOMMANDS = ("fit", "validate", "test", "predict")
#: The grid axis whose values are config files added to a run's ``--config`` list (not a config key).
CONFIG_AXIS = "configs"
_SPEC_KEYS = {"sweep", "subcommand", "configs", "set", "grid", "exclude", "launcher"}


class SweepError(CopraError, ValueError):
    """A sweep file is malformed, or one of its runs does not parse as a config. The message names the key."""


@dataclass
class PlannedRun:
    """One point of the grid.

    Attributes:
        index: Position in the expanded grid (stable for a given sweep file).
        axes: Axis config key -> value for this run (zipped axes are split into their keys).
        args: Command line arguments after the subcommand (``--config ... --key value ...``).
        config_hash: The run's identity (:func:`copra_bench.run_identity.config_hash` of ``resolved``), filled by
            :func:`copra_bench.sweep.resolve.resolve_runs`.
        resolved: The run's config as the CLI parser resolves it (plain data).
    """

    index: int
    axes: dict[str, Any]
    args: list[str]
    config_hash: str = ""
    resolved: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``key=value`` pairs of the axes, short keys (last two components)."""
        return " ".join(f"{short_key(k)}={display_value(v)}" for k, v in self.axes.items()) or "(base)"


@dataclass
class SweepSpec:
    """A parsed sweep file (see the module docstring)."""

    sweep_id: str
    subcommand: str
    configs: list[str]
    fixed: dict[str, Any]
    grid: dict[str, list[Any]]
    exclude: list[dict[str, Any]]
    launcher: list[str]
    path: Path | None = None
    submitit: SubmititLauncher | None = None

    @classmethod
    def load(cls, path: str | Path) -> SweepSpec:
        """Read and check a sweep file; relative paths in it become absolute."""
        path = Path(path)
        if not path.is_file():
            raise SweepError(f"sweep file {path} does not exist (see configs/sweeps/ for examples)")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise SweepError(f"sweep file {path} is not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise SweepError(f"sweep file {path} must be a mapping with keys {sorted(_SPEC_KEYS)}")
        return cls.from_dict(raw, path=path)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, path: Path | None = None) -> SweepSpec:
        where = f"sweep file {path}" if path else "sweep"
        unknown = set(raw) - _SPEC_KEYS
        if unknown:
            raise SweepError(f"{where}: unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(_SPEC_KEYS)} "
                             "(config keys go under 'set:' or 'grid:')")
        subcommand = raw.get("subcommand", "fit")
        if subcommand not in SUBCOMMANDS:
            raise SweepError(f"{where}: subcommand {subcommand!r} is not one of {SUBCOMMANDS}")
        configs = raw.get("configs") or []
        if isinstance(configs, str):
            configs = [configs]
        grid = raw.get("grid") or {}
        if not isinstance(grid, dict):
            raise SweepError(f"{where}: 'grid' must map config keys to lists of values")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise SweepError(f"{where}: grid axis {key!r} must be a non-empty list of values")
            width = len(split_axis(key))
            if width > 1 and any(not isinstance(v, list) or len(v) != width for v in values):
                raise SweepError(f"{where}: zipped grid axis {key!r} joins {width} keys: each value must be a list "
                                 f"of {width} values")
        fixed = raw.get("set") or {}
        exclude = raw.get("exclude") or []
        if not isinstance(fixed, dict) or not isinstance(exclude, list) or \
                not all(isinstance(e, dict) for e in exclude):
            raise SweepError(f"{where}: 'set' must be a mapping and 'exclude' a list of mappings")
        launcher, submitit = parse_launcher(raw.get("launcher"), where=where)
        sweep_id = str(raw.get("sweep") or (path.stem if path else "sweep"))
        base = path.resolve().parent if path else None
        grid = {k: [_maybe_path(v, base) for v in vs] for k, vs in grid.items()}
        if CONFIG_AXIS in grid:
            grid[CONFIG_AXIS] = [_config_files(v, base, where=f"{where}, grid axis {CONFIG_AXIS!r}")
                                 for v in grid[CONFIG_AXIS]]
        return cls(sweep_id=sweep_id, subcommand=subcommand,
                   configs=[resolve_path(c, base, where=where) for c in configs],
                   fixed={k: _maybe_path(v, base) for k, v in fixed.items()},
                   grid=grid, exclude=exclude, launcher=launcher, path=path, submitit=submitit)

    @property
    def config_keys(self) -> list[str]:
        """The grid axes that are config keys (all but :data:`CONFIG_AXIS`)."""
        return [k for k in self.grid if k != CONFIG_AXIS]

    def expand(self) -> list[PlannedRun]:
        """Every run of the grid (cartesian product of the axes, minus ``exclude``), in a stable order."""
        keys = list(self.grid)
        runs: list[PlannedRun] = []
        for combo in itertools.product(*(self.grid[k] for k in keys)):
            axes: dict[str, Any] = {}
            for key, value in zip(keys, combo, strict=True):
                parts = split_axis(key)
                axes.update(zip(parts, value if len(parts) > 1 else [value], strict=True))
            if any(all(_same(axes.get(k, self.fixed.get(k)), v) for k, v in ex.items()) for ex in self.exclude):
                continue
            extra = axes.get(CONFIG_AXIS, [])
            files = [*self.configs, *([extra] if isinstance(extra, str) else extra)]
            args = [a for c in files for a in ("--config", c)]
            for key, value in {**self.fixed, **{k: v for k, v in axes.items() if k != CONFIG_AXIS}}.items():
                args += [f"--{key}", cli_value(value)]
            runs.append(PlannedRun(index=len(runs), axes=axes, args=args))
        return runs


def split_axis(key: str) -> list[str]:
    """``"a.b,c"`` -> ``["a.b", "c"]`` (a zipped axis); a plain key gives itself."""
    return [part.strip() for part in str(key).split(",") if part.strip()]


def short_key(key: str) -> str:
    """Last two dotted components, without ``init_args``: ``model.init_args.rank`` -> ``model.rank``."""
    parts = [p for p in key.split(".") if p != "init_args"]
    return ".".join(parts[-2:])


def cli_value(value: Any) -> str:
    """A value as the CLI parser reads it (``true``, ``null``, JSON for lists and mappings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def display_value(value: Any) -> str:
    """:func:`cli_value`, with component files shortened to their file name."""
    text = cli_value(value)
    return Path(text).name if text.endswith((".yaml", ".yml")) else text


def _same(a: Any, b: Any) -> bool:
    return cli_value(a) == cli_value(b) or (isinstance(a, str) and isinstance(b, str) and
                                            Path(a).name == Path(b).name and a.endswith((".yaml", ".yml")))


def resolve_path(value: str, base: Path | None, *, where: str) -> str:
    """An absolute path for ``value``: as given, else under the sweep file's folder or one of its parents."""
    candidates = [Path(value).expanduser()]
    if base is not None and not Path(value).is_absolute():
        candidates += [folder / value for folder in (base, *base.parents)]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    raise SweepError(f"{where}: config file {value!r} not found (looked in the current directory and in "
                     f"{base} and its parents)")


def _config_files(value: Any, base: Path | None, *, where: str) -> Any:
    """A ``configs`` axis value (a file or a list of files), made absolute; a missing file is an error here."""
    if isinstance(value, list):
        return [resolve_path(str(v), base, where=where) for v in value]
    return resolve_path(str(value), base, where=where)


def _maybe_path(value: Any, base: Path | None) -> Any:
    """Values ending in .yaml/.yml are component files: made absolute when they exist (else left for the parser)."""
    if isinstance(value, list):
        return [_maybe_path(v, base) for v in value]
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        try:
            return resolve_path(value, base, where="")
        except SweepError:
            return value  # the config parser names the missing file with its key
    return value
