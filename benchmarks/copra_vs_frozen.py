"""Does COPRA beat the frozen model on the embedded default? The main job over several seeds, against frozen.

Runs ``python -m copra_bench fit --config configs/cross_domain.yaml`` (COPRA on the tiny built-in Qwen2-VL, trained
on synthetic domain A, tested on domain B and on A's test split) once per seed, and the frozen baseline once (it has
no randomness), each in its own folder, then prints frame AUC / AP per test set and post-processing step as
mean +- std over the seeds.

    .venv/bin/python benchmarks/copra_vs_frozen.py --seeds 0 1 2 [--out /tmp/copra_vs_frozen]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def run(out: Path, *args: str) -> tuple[dict, float]:
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "copra_bench", "fit", "--config", str(REPO / "configs" / "cross_domain.yaml"), *args]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {out}:\n{done.stderr[-3000:]}")
    (metrics,) = out.glob("outputs/*/*/metrics.json")
    return json.loads(metrics.read_text())["test"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("/tmp/copra_vs_frozen"))
    args = parser.parse_args()

    frozen, frozen_s = run(args.out / "frozen", "--model", str(REPO / "configs" / "model" / "frozen_tiny.yaml"))
    copra = []
    for seed in args.seeds:
        result, seconds = run(args.out / f"copra_seed{seed}", "--seed_everything", str(seed))
        copra.append(result)
        print(f"COPRA seed {seed}: {seconds:.0f} s", flush=True)
    print(f"frozen: {frozen_s:.0f} s\n")
    print(f"| test set | step | metric | frozen | COPRA mean +- std over seeds {args.seeds} | per seed |")
    print("|---|---|---|---|---|---|")
    for name in frozen:
        for step in ("step1", "step2", "step3"):
            for metric in ("auc", "ap"):
                values = np.array([100 * r[name][step][metric] for r in copra])
                print(f"| {name} | {step} | {metric} | {100 * frozen[name][step][metric]:.2f} | "
                      f"{values.mean():.2f} +- {values.std(ddof=1) if len(values) > 1 else 0:.2f} | "
                      f"{', '.join(f'{v:.2f}' for v in values)} |")


if __name__ == "__main__":
    main()
