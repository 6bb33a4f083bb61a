"""``python -m copra_bench sweep --config configs/sweeps/<name>.yaml [--dry-run | --emit-commands | --status] ...``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from copra_bench.sweep.devices import DevicePool, parse_devices
from copra_bench.sweep.runner import command_of, prepare, run_sweep, unfinished
from copra_bench.sweep.spec import SweepError, SweepSpec


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
    parser.add_argument("--status", action="store_true",
                        help="each point's state (queued / running / finished / failed / killed, requeues) from "
                             "the store and the claims; starts nothing, works while the sweep runs elsewhere")
    parser.add_argument("--max-parallel", type=int, default=None, help="runs at once (default 1)")
    parser.add_argument("--devices", default=None,
                        help="GPUs to spread the runs over, e.g. 0,1,2,3: each run gets --per-run of them of its "
                             "own (CUDA_VISIBLE_DEVICES), len(devices) // per-run runs at once")
    parser.add_argument("--per-run", type=int, default=1,
                        help="GPUs per run with --devices (default 1; more: the run also gets --trainer.devices N "
                             "unless the sweep sets trainer.devices)")
    parser.add_argument("--wait", action="store_true",
                        help="with a submitit launcher: block until every submitted job has ended")
    parser.add_argument("--max-runs", type=int, default=None, help="start (or submit) at most this many runs now")
    parser.add_argument("--only", action="append", default=[], metavar="AXIS=VALUE",
                        help="only the points whose axis has this value, e.g. --only model=copra_tiny.yaml "
                             "(repeatable: all must match); indices stay those of the whole grid")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store of every run (default: the configs')")
    parser.add_argument("--experiment", default=None, help="MLflow experiment of every run (default: the configs')")
    parser.add_argument("--log-dir", default=None, help="run logs (default outputs/sweeps/<sweep id>/)")
    parser.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="extra override for every run, e.g. --set trainer.max_epochs 1 (repeatable)")
    return parser


def _device_pool(args: argparse.Namespace, spec: SweepSpec, overrides: dict) -> DevicePool | None:
    if args.devices is None:
        if args.per_run != 1:
            raise SweepError("--per-run needs --devices (the GPUs to split), e.g. --devices 0,1,2,3 --per-run 2")
        return None
    if args.max_parallel is not None:
        raise SweepError("--devices and --max-parallel both set how many runs run at once: drop --max-parallel "
                         "(--devices 0,1,2,3 --per-run 1 runs 4 at once)")
    if spec.submitit is not None:
        raise SweepError(f"sweep file {spec.path}: --devices spreads runs over this machine's GPUs; with a submitit "
                         "launcher the scheduler assigns GPUs (launcher.gpus_per_node)")
    pool = DevicePool(parse_devices(args.devices), args.per_run)
    sets_devices = "trainer.devices" in {**spec.fixed, **spec.grid, **overrides}
    if args.per_run > 1 and not sets_devices:
        overrides["trainer.devices"] = args.per_run
    if pool.unused:
        print(f"sweep: GPU {','.join(map(str, pool.unused))} left unused ({len(pool.devices)} GPUs are not a "
              f"multiple of --per-run {args.per_run})", file=sys.stderr)
    return pool


def sweep_command(argv: list[str]) -> int:
    """Entry point; exit status 0 all finished (or submitted), 1 some run failed or was killed, 2 bad sweep file or
    options, 143 / 130 stopped by SIGTERM / SIGINT (its running runs are KILLED, not finished)."""
    args = _parser().parse_args(argv)
    if args.max_parallel is not None and args.max_parallel < 1:
        _parser().error("--max-parallel must be at least 1")
    spec = SweepSpec.load(args.config)
    overrides = dict(args.set)
    if args.tracking_uri:
        overrides["trainer.logger.init_args.tracking_uri"] = args.tracking_uri
    if args.experiment:
        overrides["trainer.logger.init_args.experiment_name"] = args.experiment
    log_dir = Path(args.log_dir) if args.log_dir else Path("outputs") / "sweeps" / spec.sweep_id
    pool = None if args.status or args.emit_commands else _device_pool(args, spec, overrides)
    runs = prepare(spec, overrides=overrides, only=args.only)
    if args.status:
        from copra_bench.sweep.status import print_status

        return print_status(spec, runs, log_dir=log_dir)
    if args.emit_commands:
        todo, skipped = unfinished(spec, runs)
        if skipped:
            print(f"# {skipped} of {len(runs)} runs already finished: not emitted", file=sys.stderr)
        for run in todo:
            print(shlex.join(command_of(spec, run)))
        return 0
    if spec.submitit is not None and not args.dry_run:
        from copra_bench.sweep.submit import submit_sweep

        return submit_sweep(spec, runs, log_dir=log_dir, max_runs=args.max_runs, wait=args.wait)
    result = run_sweep(spec, runs, max_parallel=args.max_parallel or 1, dry_run=args.dry_run,
                       max_runs=args.max_runs, log_dir=log_dir, devices=pool)
    return result.exit_code
