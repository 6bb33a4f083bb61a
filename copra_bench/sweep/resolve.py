"""Resolve each run's config with the real CLI parser, without instantiating anything, and hash it
(:func:`copra_bench.run_identity.config_hash`, the identity the run itself records).

``CopraCLI(args, run=False)`` would build the model and data (seconds to minutes each). Instead the parser is taken
from a :class:`~copra_bench.cli.CopraCLI` whose ``parse_arguments`` stops construction right after the parser is
built (0.3 s), and each run is checked with ``parse_args`` only (about 0.5 s): unknown keys, wrong types, missing
component files and bad class paths are all found before the first run starts.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import warnings
from typing import Any

from copra_bench.cli import CopraCLI
from copra_bench.run_identity import config_hash, flat_keys
from copra_bench.sweep.spec import PlannedRun, SweepError, split_axis


class _ParserReady(Exception):
    def __init__(self, parser: Any) -> None:
        super().__init__("parser built")
        self.parser = parser


@functools.lru_cache(maxsize=1)
def build_parser() -> Any:
    """The full ``python -m copra_bench`` parser (Lightning subcommands), nothing instantiated (built once)."""
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
