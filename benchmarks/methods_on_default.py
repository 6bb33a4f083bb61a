"""Every method on the embedded default: the main job (``configs/cross_domain.yaml``: trained on synthetic domain A,
tested on domain B and on A's test split, tiny built-in Qwen2-VL) with each model config, over several seeds.

Prints the fit and test seconds of each run (``timing`` in its metrics.json), the wall time of its process (start-up,
fit, test, artifacts) and frame AUC / AP per test set and
post-processing step as mean +- std over the seeds. Each run has its own folder (its own MLflow store).

    .venv/bin/python benchmarks/methods_on_default.py --seeds 0 1 2 [--methods frozen prompt_tuning ...] \\
        [--parallel 2] [--out /tmp/methods_on_default]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
METHODS = {"frozen": "frozen_tiny", "prompt_tuning": "prompt_tuning_tiny", "lora_sft": "lora_sft_tiny",
           "lora_grpo": "lora_grpo_tiny", "copra": "copra_tiny"}


def run(out: Path, model: str, seed: int) -> tuple[dict, float, dict]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "copra_bench", "fit", "--config", str(REPO / "configs" / "cross_domain.yaml"),
           "--model", str(REPO / "configs" / "model" / f"{model}.yaml"), "--seed_everything", str(seed)]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {out}:\n{done.stderr[-3000:]}")
    (metrics,) = out.glob("outputs/*/*/metrics.json")
    saved = json.loads(metrics.read_text())
    return saved["test"], seconds, saved.get("timing", {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (each gets OMP_NUM_THREADS=1 if > 1)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/methods_on_default"))
    args = parser.parse_args()
    if args.parallel > 1:
        os.environ["OMP_NUM_THREADS"] = "1"

    # The frozen model has no randomness: one run stands for every seed.
    jobs = [(m, s) for m in args.methods for s in (args.seeds[:1] if m == "frozen" else args.seeds)]
    with ThreadPoolExecutor(args.parallel) as pool:
        results = dict(zip(jobs, pool.map(lambda j: run(args.out / f"{j[0]}_seed{j[1]}", METHODS[j[0]], j[1]), jobs)))

    print(f"| method | fit s | test s (both sets) | process wall s | seeds {args.seeds} |")
    print("|---|---|---|---|---|")
    for method in args.methods:
        runs = [results[j] for j in jobs if j[0] == method]
        cells = [", ".join(f"{r[2].get(k, float('nan')):.0f}" for r in runs) for k in ("fit_s", "test_s")]
        print(f"| {method} | {cells[0]} | {cells[1]} | {', '.join(f'{r[1]:.0f}' for r in runs)} | |")
    names = list(next(iter(results.values()))[0])
    print(f"\n| test set | step | metric | {' | '.join(args.methods)} |")
    print("|---|---|---|" + "---|" * len(args.methods))
    for name in names:
        for step in ("step1", "step2", "step3"):
            for metric in ("auc", "ap"):
                cells = []
                for method in args.methods:
                    values = np.array([100 * results[j][0][name][step][metric] for j in jobs if j[0] == method])
                    spread = f" +- {values.std(ddof=1):.1f}" if len(values) > 1 else ""
                    cells.append(f"{values.mean():.1f}{spread}")
                print(f"| {name} | {step} | {metric} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
