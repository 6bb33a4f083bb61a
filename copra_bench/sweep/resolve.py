"""Resolve each run's config with the real CLI parser, without instantiating anything, and hash it.

``CopraCLI(args, run=False)`` would build the model and data (seconds to minutes each). Instead the parser is taken
from a :class:`~copra_bench.cli.CopraCLI` whose ``parse_arguments`` stops construction right after the parser is
built (0.3 s), and each run is checked with ``parse_args`` only (about 0.5 s): unknown keys, wrong types, missing
component files and bad class paths are all found before the first run starts.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import warnings
from typing import Any

from copra_bench.sweep.spec import PlannedRun, SweepError, split_axis

#: Keys left out of the config hash: bookkeeping that does not change what a run computes.
HASH_EXCLUDED = ("trainer.logger", "config", "__path__")


class _ParserReady(Exception):
    def __init__(self, parser: Any) -> None:
        super().__init__("parser built")
        self.parser = parser


@functools.lru_cache(maxsize=1)
def build_parser() -> Any:
    """The full ``python -m copra_bench`` parser (Lightning subcommands), nothing instantiated (built once)."""
    from copra_bench.cli import CopraCLI

    class _ParseOnlyCLI(CopraCLI):
        def parse_arguments(self, parser: Any, args: Any) -> None:
            raise _ParserReady(parser)

    try:
        _ParseOnlyCLI(args=[])
    except _ParserReady as ready:
        return ready.parser
    raise RuntimeError("CopraCLI did not reach parse_arguments")  # pragma: no cover - Lightning changed


def parse_run(parser: Any, subcommand: str, args: list[str]) -> dict[str, Any]:
    """The resolved config of ``python -m copra_bench <subcommand> <args>`` as plain data.

    Raises:
        SweepError: the parser rejects the arguments; the message is the parser's (it names the key).
    """
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The subcommand's own parser: half the time of going through the top-level one, same checks.
        sub = parser._subcommands_action._name_parser_map[subcommand]
        try:
            config = sub.parse_args(args)
        except SystemExit:
            message = stderr.getvalue()
            message = message[message.find("error:"):] if "error:" in message else message
            raise SweepError(message.strip() or "the config parser rejected the arguments") from None
        return json.loads(sub.dump(config, format="json", skip_none=False, skip_validation=True))  # validated above


def flat_keys(config: Any, prefix: str = "") -> set[str]:
    """Every dotted key of a nested config (lists not descended)."""
    keys = {prefix[:-1]} if prefix else set()
    if isinstance(config, dict):
        for key, value in config.items():
            keys |= flat_keys(value, f"{prefix}{key}.")
    return keys


def config_hash(subcommand: str, config: dict[str, Any]) -> str:
    """16 hex digits identifying what a run computes: the resolved config minus :data:`HASH_EXCLUDED` (and, for
    ``fit``, ``ckpt_path``: resuming a run does not change what it computes; for test/predict it does).

    Every run carries it (tag ``config_hash``, set by the CLI; sweeps also tag ``sweep.config_hash``), which is how
    ``fit --ckpt_path last`` finds the run to continue and how a sweep finds its finished runs."""
    excluded = HASH_EXCLUDED + (("ckpt_path",) if subcommand == "fit" else ())

    def strip(node: Any, prefix: str = "") -> Any:
        if isinstance(node, dict):
            return {k: strip(v, f"{prefix}{k}.") for k, v in sorted(node.items())
                    if f"{prefix}{k}" not in excluded and k != "__path__"}
        if isinstance(node, list):
            return [strip(v, prefix) for v in node]
        return node

    text = json.dumps({"subcommand": subcommand, "config": strip(config)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolve_runs(subcommand: str, runs: list[PlannedRun], grid_keys: list[str], *, parser: Any = None) -> Any:
    """Parse every run; fill ``config_hash`` and ``resolved``. All problems are collected into one error.

    Args:
        subcommand: The Lightning subcommand of the sweep.
        runs: The expanded grid.
        grid_keys: The sweep's axis keys (zipped axes as written); each must be a key of the resolved config.
        parser: A parser from :func:`build_parser` (built here when not given).

    Returns:
        The parser (to reuse).

    Raises:
        SweepError: a grid key is not a config key, or a run's config does not parse.
    """
    parser = parser or build_parser()
    problems: list[str] = []
    for run in runs:
        try:
            run.resolved = parse_run(parser, subcommand, run.args)
        except SweepError as err:
            problems.append(f"run {run.index} ({run.label}): {err}")
            continue
        known = flat_keys(run.resolved)
        for key in (k for axis in grid_keys for k in split_axis(axis)):
            if key not in known:
                problems.append(f"run {run.index}: grid key {key!r} is not a config key of "
                                f"`python -m copra_bench {subcommand}` (see `{subcommand} --print_config`)")
        run.config_hash = config_hash(subcommand, run.resolved)
    if problems:
        shown = "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise SweepError(f"{len(problems)} problem(s) in the sweep, nothing was run:\n  {shown}")
    return parser
