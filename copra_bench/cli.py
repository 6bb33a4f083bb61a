"""Command line: ``python -m copra_bench fit|validate|test|predict --config X.yaml`` and the tool commands.

The Lightning subcommands go through :class:`~copra_bench.lightning_cli.CopraCLI` (LightningCLI, subclass mode for
model and data, repeatable ``--config``, ``--print_config``, omegaconf interpolation). Tool commands (``data``,
``evaluate``, ``sweep``, ``report``) are plain functions named in :data:`TOOLS`, imported only when that tool runs.

This module is the entry point and stays light: ``--help`` and the tools start without importing Lightning, torch or
transformers (``CopraCLI`` and its parser are loaded on first use, also as attributes of this module).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from copra_bench.errors import CopraError
from copra_bench.tool_table import TOOLS, load_tool, top_level_help

__all__ = ["TOOLS", "load_tool", "main"]  # and, loaded on first access, the names below

#: Names served from :mod:`copra_bench.lightning_cli` on first access (``from copra_bench.cli import CopraCLI``).
_LIGHTNING_NAMES = ("CopraCLI", "CopraArgumentParser", "QUIET_SUBCOMMANDS", "SCORING_SUBCOMMANDS")


def __getattr__(name: str) -> Any:
    if name in _LIGHTNING_NAMES:
        from copra_bench import lightning_cli

        return getattr(lightning_cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _user_error(exc: BaseException) -> CopraError | None:
    """The CopraError behind ``exc``: jsonargparse re-raises errors from ``__init__`` as its own ValueError."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, CopraError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m copra_bench`` and the ``copra-bench`` script."""
    from_shell = argv is None
    argv = sys.argv[1:] if from_shell else list(argv)
    if argv in (["--help"], ["-h"]):
        print(top_level_help())
        return 0
    if argv and argv[0] in TOOLS:
        try:
            return load_tool(argv[0])(argv[1:])
        except Exception as exc:  # noqa: BLE001  (a user error is printed, anything else re-raised)
            return _report_error(exc)
    from copra_bench.signals import STOP
    from copra_bench.tracking.run_lock import release_all

    STOP.reset()
    STOP.install()
    try:
        from copra_bench.lightning_cli import CopraCLI

        CopraCLI(args=None if from_shell else argv)
        return 0
    except SystemExit as exc:  # RunStopped, Lightning's SIGTERMException, its exit after a KeyboardInterrupt
        if not STOP.requested:
            raise
        where = STOP.where or getattr(exc, "where", None)
        print(f"stopped: {STOP.reason}" + (f"; stopped {where}" if where else "") + "; the run is KILLED. Continue "
              "it with --ckpt_path last", file=sys.stderr)
        return STOP.exit_code
    except Exception as exc:  # noqa: BLE001  (a user error is printed, anything else re-raised)
        return _report_error(exc)
    finally:
        STOP.uninstall()
        release_all()


def _report_error(exc: Exception) -> int:
    err = _user_error(exc)
    if err is None or os.environ.get("COPRA_DEBUG"):
        raise exc
    print(f"error: {err}", file=sys.stderr)
    return 2
