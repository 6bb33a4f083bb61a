"""Time the sweep's own overhead per run: ``.venv/bin/python benchmarks/sweep_overhead.py [--runs 10] [--parallel 1]``.

The sweep runs a trivial command instead of a training run (a Python process that exits at once), so what remains
is the sweep machinery: resolving each run's config with the CLI parser, finding finished runs, creating the MLflow
run in a sqlite store, starting the process, recording the outcome. Reported: the one-off start (imports, building
the parser, creating the store) and the per-run overhead = (wall time - time spent inside the run processes) / runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        from copra_bench.sweep.resolve import build_parser
        from copra_bench.sweep.runner import prepare, run_sweep
        from copra_bench.sweep.spec import SweepSpec
        cli_parser = build_parser()
        spec = SweepSpec.from_dict({
            "sweep": "overhead", "configs": [str(REPO / "configs" / "cross_domain.yaml")],
            "set": {"trainer.logger.init_args.tracking_uri": f"sqlite:///{folder / 'mlflow.db'}"},
            "grid": {"seed_everything": list(range(args.runs))},
            "launcher": [sys.executable, "-c", "import sys; sys.exit(0)"]})
        from copra_bench.sweep.store import SweepStore
        SweepStore(f"sqlite:///{folder / 'mlflow.db'}", "copra_bench")  # create the store's tables once
        start_s = time.perf_counter() - started

        started = time.perf_counter()
        runs = prepare(spec, parser=cli_parser)
        resolve_s = time.perf_counter() - started
        started = time.perf_counter()
        result = run_sweep(spec, runs, max_parallel=args.parallel, log_dir=folder / "logs", echo=lambda _: None)
        execute_s = time.perf_counter() - started
        inside = sum(result.durations)
        assert len(result.finished) == args.runs, result
        per_run = (resolve_s + execute_s - inside / args.parallel) / args.runs
        print(f"one-off start (imports, parser, store): {start_s:.1f} s")
        print(f"resolve {args.runs} configs: {resolve_s:.1f} s ({resolve_s / args.runs:.2f} s per run)")
        print(f"execute {args.runs} trivial runs ({args.parallel} at a time): {execute_s:.1f} s, of which "
              f"{inside:.1f} s process time inside the runs")
        print(f"sweep overhead per run outside the run: {per_run:.2f} s")
        started = time.perf_counter()
        again = run_sweep(spec, prepare(spec, parser=cli_parser), log_dir=folder / "logs", echo=lambda _: None)
        print(f"rerun with everything finished (resolve + skip): {time.perf_counter() - started:.1f} s, "
              f"{again.skipped} skipped")
        print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
