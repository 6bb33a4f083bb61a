"""Time the leaderboard report over many runs: ``.venv/bin/python benchmarks/report.py [--runs 100]``.

Creates ``--runs`` fake FINISHED runs directly in a temporary sqlite store with MLflow client calls (shaped like real
ones: ~150 params incl. protocol.*, 3 test sets x 3 steps x 12 metrics + per-class AUCs, sweep tags over 4 methods x
5 seeds x train sets, two small PNG plots and metrics.json per run), then times ``write_report`` (loading the runs,
aggregating, writing Markdown and HTML with the images embedded). Prints one line per phase.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METRICS = ("auc", "ap", "ap_step", "ap_trapz", "macro_auc", "auc_a", "ap_a", "far", "auc_ci_low", "auc_ci_high",
           "ap_ci_low", "ap_ci_high")
CLASSES = ("Abuse", "Arrest", "Explosion", "Fighting", "RoadAccidents")
SETS = ("synth_ucf_A", "synth_ucf_B", "synth_xd")


def _png(size: int = 8000) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + os.urandom(size)  # the report embeds bytes as they are; no decoding needed


def populate(uri: str, folder: Path, runs: int) -> None:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.create_experiment("bench", artifact_location=str(folder / "artifacts"))
    rng = random.Random(0)
    methods, trains = ("frozen", "copra", "static_grpo", "prompt"), ("synth_ucf_A", "synth_ucf_B")
    for i in range(runs):
        method, seed, train = methods[i % 4], (i // 4) % 5, trains[(i // 20) % 2]
        tags = {"method": method, "dataset": f"{train}_to_synth_xd", "sweep.id": "bench",
                "sweep.axes": json.dumps({"model": method, "seed_everything": str(seed), "train": train})}
        run_id = client.create_run(experiment, run_name=f"bench-{i:03d}", tags=tags).info.run_id
        params = {f"model.init_args.p{j}": str(j) for j in range(100)}
        params.update({f"protocol.k{j}": "v" for j in range(30)})
        params.update({"model.class_path": f"x.{method}", "seed_everything": str(seed), "data.name": tags["dataset"],
                       "data.init_args.source.init_args.domain": train[-1]})
        metrics = [Metric(f"test/{s}/step{k}/{m}", rng.random(), 0, 0) for s in SETS for k in (1, 2, 3)
                   for m in METRICS]
        metrics += [Metric(f"test/{s}/step{k}/auc_class/{c}", rng.random(), 0, 0) for s in SETS for k in (1, 2, 3)
                    for c in CLASSES]
        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, max(len(items), len(metrics)), 100):
            client.log_batch(run_id, metrics=metrics[start:start + 100], params=items[start:start + 100])
        source = folder / "src" / run_id
        for s in SETS[:2]:
            (source / "plots" / s).mkdir(parents=True)
            for name in ("curves.png", "timelines.png"):
                (source / "plots" / s / name).write_bytes(_png())
        (source / "metrics.json").write_text("{}")
        (source / "config.yaml").write_text("seed_everything: 0\n")
        client.log_artifacts(run_id, str(source))
        client.set_terminated(run_id, "FINISHED")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        started = time.perf_counter()
        populate(uri, folder, args.runs)
        print(f"created {args.runs} fake runs in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        from copra_bench.report.command import write_report
        imported = time.perf_counter() - started
        started = time.perf_counter()
        markdown, page = write_report("bench", folder / "out", tracking_uri=uri)
        seconds = time.perf_counter() - started
        print(f"import of copra_bench.report: {imported:.1f} s")
        print(f"report over {args.runs} runs: {seconds:.1f} s (Markdown {markdown.stat().st_size / 1e3:.0f} kB, "
              f"HTML {page.stat().st_size / 1e6:.1f} MB)")
        print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
