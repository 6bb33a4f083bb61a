"""Time the main job per stage: synthetic data generation, fit, test, and the whole command.

Run from the repository root (``make benchmark`` or ``.venv/bin/python benchmarks/main_job.py``); writes a JSON
summary to stdout. The figures in docs/benchmarks.md come from this script. Uses a fresh cache and a fresh
working directory so generation is measured too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(REPO / "configs" / "cross_domain.yaml"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="copra_bench_benchmark_"))
    env = {**os.environ, "COPRA_CACHE_DIR": str(work / "cache"), "MLFLOW_DISABLE_TELEMETRY": "true"}

    # Stage 1: data generation alone, in a fresh process (both domains of the embedded default).
    gen = ("import time; from copra_bench.datamodules.synthetic import SyntheticSpec, ensure_synthetic;"
           "t=time.perf_counter(); [ensure_synthetic(SyntheticSpec(domain=d), progress=False) for d in 'AB'];"
           "print(time.perf_counter()-t)")
    generation_s = float(subprocess.run([sys.executable, "-c", gen], env=env, cwd=work, check=True,
                                        capture_output=True, text=True).stdout.strip().splitlines()[-1])

    # Stage 2: the main job with the data already cached (fit + test timed inside by RunArtifacts).
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "copra_bench", "fit", "--config", args.config], env=env, cwd=work,
                   check=True, capture_output=True, text=True)
    command_s = time.perf_counter() - start
    metrics = json.loads(next(work.glob("outputs/*/*/metrics.json")).read_text())
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "config": os.path.relpath(args.config, REPO),
        "data_generation_s": round(generation_s, 2),
        "fit_s": round(metrics["timing"].get("fit_s", 0.0), 2),
        "test_s": round(metrics["timing"]["test_s"], 2),
        "command_wall_s_data_cached": round(command_s, 2),
        "total_first_run_s": round(generation_s + command_s, 2),
        "results": {k: {step: {"auc": v[step]["auc"], "ap": v[step]["ap"]} for step in ("step1", "step2", "step3")}
                    | {"frames": v["step1"]["num_frames"]} for k, v in metrics["test"].items()},
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
