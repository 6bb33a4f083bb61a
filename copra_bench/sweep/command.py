"""``python -m copra_bench sweep --config configs/sweeps/<name>.yaml [--dry-run | --emit-commands] ...``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from copra_bench.sweep.runner import command_of, prepare, run_sweep, unfinished
from copra_bench.sweep.spec import SweepSpec


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m copra_bench sweep",
        description="Run a grid of experiments (one MLflow run each), resumable: a rerun skips finished runs. "
                    "Every run's config is checked before the first one starts.")
    parser.add_argument("--config", required=True, help="sweep file (see configs/sweeps/)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs (done / to run), start nothing")
    parser.add_argument("--emit-commands", action="store_true",
                        help="print one shell command per run (for a cluster scheduler), start nothing; each "
                             "command creates its own MLflow run with the sweep tags")
    parser.add_argument("--max-parallel", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument("--max-runs", type=int, default=None, help="start at most this many runs now")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store of every run (default: the configs')")
    parser.add_argument("--experiment", default=None, help="MLflow experiment of every run (default: the configs')")
    parser.add_argument("--log-dir", default=None, help="run logs (default outputs/sweeps/<sweep id>/)")
    parser.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="extra override for every run, e.g. --set trainer.max_epochs 1 (repeatable)")
    return parser


def sweep_command(argv: list[str]) -> int:
    """Entry point; exit status 0 all finished, 1 some run failed or was killed, 2 bad sweep file, 143 / 130
    stopped by SIGTERM / SIGINT (its running runs are KILLED, not finished)."""
    args = _parser().parse_args(argv)
    if args.max_parallel < 1:
        _parser().error("--max-parallel must be at least 1")
    spec = SweepSpec.load(args.config)
    overrides = dict(args.set)
    if args.tracking_uri:
        overrides["trainer.logger.init_args.tracking_uri"] = args.tracking_uri
    if args.experiment:
        overrides["trainer.logger.init_args.experiment_name"] = args.experiment
    runs = prepare(spec, overrides=overrides)
    if args.emit_commands:
        todo, skipped = unfinished(spec, runs)
        if skipped:
            print(f"# {skipped} of {len(runs)} runs already finished: not emitted", file=sys.stderr)
        for run in todo:
            print(shlex.join(command_of(spec, run)))
        return 0
    result = run_sweep(spec, runs, max_parallel=args.max_parallel, dry_run=args.dry_run, max_runs=args.max_runs,
                       log_dir=Path(args.log_dir) if args.log_dir else None)
    return result.exit_code
