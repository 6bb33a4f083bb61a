"""The tool commands besides the Lightning subcommands, by name: imported by the light entry point (``cli.py``) and
by :class:`~copra_bench.lightning_cli.CopraCLI` (its ``--help`` names them). It imports nothing, so the table can be
read, and ``python -m copra_bench --help`` printed, before torch or Lightning is loaded."""

from __future__ import annotations

import importlib
from collections.abc import Callable

#: Tool commands: name -> ``"module:function"``, the function taking the tool's arguments and returning the exit
#: status. Looked up by name only, so ``python -m copra_bench fit`` (and ``--help``) never imports a tool module, and a
#: tool module never needs to import the CLI.
TOOLS: dict[str, str] = {
    "data": "copra_bench.datamodules.commands:data_command",
    "evaluate": "copra_bench.evaluation.command:run_evaluate",
    "sweep": "copra_bench.sweep.command:sweep_command",
    "report": "copra_bench.report.command:report_command",
    "sync": "copra_bench.tracking.sync:sync_command",
    "transfer": "copra_bench.transfer.command:transfer_command",
}

#: One line per tool for the top-level ``--help``.
TOOL_SUMMARIES: dict[str, str] = {
    "data": "inspect a dataset copy (the doctor), write a synthetic release",
    "evaluate": "every metric again from a run's saved scores, without re-running the model",
    "sweep": "a grid of runs from a sweep file, resumable",
    "report": "Markdown + HTML leaderboard of an MLflow experiment",
    "sync": "upload a run's local copy (params, tags, metric history, artifacts) to a tracking store, later",
    "transfer": "zero-shot transfer: MC video QA / captioning with a trained method (inspect: the doctor)",
}

#: The Lightning subcommands, one line each, in the order LightningCLI lists them.
SUBCOMMAND_SUMMARIES: dict[str, str] = {
    "fit": "train the method, then test it on every test set (--test_after_fit false to skip the test)",
    "validate": "one validation pass (--ckpt_path <checkpoint> for a trained method)",
    "test": "score every test set and compute every metric (--ckpt_path <checkpoint> for a trained method)",
    "predict": "frame scores of every test set, no metrics (--ckpt_path <checkpoint> for a trained method)",
}


def load_tool(name: str) -> Callable[[list[str]], int]:
    """The function of tool command ``name`` (a key of :data:`TOOLS`), importing its module now."""
    module, _, function = TOOLS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def top_level_help() -> str:
    """What ``python -m copra_bench --help`` prints: every command, without building the Lightning parser."""
    width = max(map(len, [*SUBCOMMAND_SUMMARIES, *TOOL_SUMMARIES]))
    lines = ["usage: python -m copra_bench <command> [options]", "",
             "copra_bench: video anomaly detection benchmark with vision-language models.", "",
             "Lightning subcommands (options: python -m copra_bench <subcommand> --help):"]
    lines += [f"  {name:<{width}}  {text}" for name, text in SUBCOMMAND_SUMMARIES.items()]
    tools = ", ".join(f"'{name}'" for name in TOOLS)
    lines += ["", f"Tool commands {tools} (options: python -m copra_bench <tool> --help):"]
    lines += [f"  {name:<{width}}  {text}" for name, text in TOOL_SUMMARIES.items()]
    lines += ["", "Example: python -m copra_bench fit --config configs/cross_domain.yaml"]
    return "\n".join(lines)
