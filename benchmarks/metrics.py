"""Speed of the evaluation protocol on the full-size UCF-Crime test set (290 videos, 1,111,808 frames).

Ground truth from the real annotation files shipped with the package (``datamodules/annotations/ucf_crime``:
official temporal annotation, true frame counts from VERA's UCF_Eval.json, end frame exclusive), random window
scores (stride 16, spread to frames as the test loop does) and random float16 window features. Measures:

* all metrics of one step (AUC, both APs, macro AUC, AUC_A/AP_A, FAR, 13 per-class AUCs), without bootstrap;
* the bootstrap intervals of one step (``--bootstrap`` replicates), separately;
* the whole pipeline (Steps 1-3 post-processing + all metrics of each step), without and with bootstrap, for each
  feature size in ``--dims``.

    .venv/bin/python benchmarks/metrics.py [--dims 256 1024 3584] [--bootstrap 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings

import numpy as np
from copra_bench.datamodules.annotations import shipped
from copra_bench.datamodules.records import intervals_to_gt
from copra_bench.datamodules.ucf_crime import parse_split, parse_temporal_annotation

from copra_bench.evaluation.assembly import VideoScores
from copra_bench.evaluation.postprocess import resolve_preset, three_steps
from copra_bench.evaluation.protocol import (
    EvaluationSettings,
    evaluate_test_set,
    step_metrics,
)
from copra_bench.windows import num_windows, window_to_frame_scores

def ucf_test_videos(dim: int, seed: int = 0) -> list[VideoScores]:
    root = shipped("ucf_crime")
    lengths = {e["video"].rsplit("/", 1)[-1][:-4]: e["length"]
               for e in json.loads((root / "UCF_Eval.json").read_text())}
    table = parse_temporal_annotation(root / "Temporal_Anomaly_Annotation.txt")
    rng = np.random.default_rng(seed)
    videos = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the five official intervals that end past the video are clipped
        for stem, cls in parse_split(root / "Anomaly_Test.txt"):
            n = lengths[stem]
            gt = intervals_to_gt(table[stem][1], n, video=stem)
            windows = rng.random(num_windows(n, stride=16))
            features = rng.standard_normal((windows.size, dim), dtype=np.float32).astype(np.float16) if dim else None
            videos.append(VideoScores(stem, int(cls != "Normal"), windows, window_to_frame_scores(windows, n),
                                      gt, features, classes=(cls,), fps=30.0))
    return videos


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 1024, 3584],
                        help="window feature sizes (ImageBind 1024 as VERA; 3584 = Qwen2-VL-7B's pooled features)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    no_ci = EvaluationSettings(bootstrap_samples=0)
    with_ci = EvaluationSettings(bootstrap_samples=args.bootstrap)
    videos = ucf_test_videos(dim=0)
    frames = [v.frame_scores for v in videos]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"{len(videos)} videos, {sum(f.size for f in frames):,} frames, "
          f"{sum(v.window_scores.size for v in videos):,} windows")
    figures = {"one step, all metrics, no bootstrap":
               best_of(lambda: step_metrics(frames, videos, ap_primary="step", settings=no_ci), args.repeat)}
    figures[f"one step, bootstrap {args.bootstrap} replicates (window-level ties)"] = best_of(
        lambda: step_metrics(frames, videos, ap_primary="step", settings=with_ci), 1) - figures[
        "one step, all metrics, no bootstrap"]
    distinct = [np.random.default_rng(1).random(f.size) for f in frames]  # every frame its own score (as Step 3)
    figures[f"one step, bootstrap {args.bootstrap} replicates (per-frame distinct scores)"] = best_of(
        lambda: step_metrics(distinct, videos, ap_primary="step", settings=with_ci), 1) - best_of(
        lambda: step_metrics(distinct, videos, ap_primary="step", settings=no_ci), 1)
    _, params = resolve_preset("vera_code", "ucf_crime")
    for dim in args.dims:
        with_features = ucf_test_videos(dim=dim)

        def post(vs=with_features):
            return [three_steps(v.window_scores, v.features, v.frame_scores.size, 16, params) for v in vs]

        figures[f"D={dim}: Steps 2-3 post-processing only"] = best_of(post, 1)
        figures[f"D={dim}: whole pipeline (3 steps, all metrics), no bootstrap"] = best_of(
            lambda vs=with_features: evaluate_test_set("ucf_crime", vs, 16, no_ci, family="ucf_crime"), 1)
        figures[f"D={dim}: whole pipeline with bootstrap {args.bootstrap}"] = best_of(
            lambda vs=with_features: evaluate_test_set("ucf_crime", vs, 16, with_ci, family="ucf_crime"), 1)
    width = max(len(k) for k in figures)
    for key, seconds in figures.items():
        print(f"{key:<{width}}  {seconds:7.2f} s")


if __name__ == "__main__":
    main()
