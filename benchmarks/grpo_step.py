"""Time one GRPO step split into its parts: rollout, reward, reference forward, loss forward, backward.

Runs :class:`copra_bench.rl.GRPOEngine` with :class:`copra_bench.rl.VLMPolicy` on a built-in tiny VLM (random
weights) in both rollout modes, with a trainable per-input bias on one LM Linear as the adaptation (a cheap
stand-in for a generated LoRA: it puts a hook in the same place and has the same row layout), and prints a
Markdown table of median seconds per part.

    .venv/bin/python benchmarks/grpo_step.py                       # both modes, B in (2, 4), G in (4, 8)
    .venv/bin/python benchmarks/grpo_step.py --modes format --batch 4 --generations 8 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{cpu}, {os.cpu_count()} cores{load}, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-qwen2-vl")
    parser.add_argument("--modes", nargs="+", default=["constrained", "format"], choices=["constrained", "format"])
    parser.add_argument("--batch", nargs="+", type=int, default=[2, 4])
    parser.add_argument("--generations", nargs="+", type=int, default=[4, 8])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="measured steps per setting (after one warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-reuse-vision", action="store_true",
                        help="format mode: re-encode the G copies of each video in the log-prob forwards")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; 1 avoids oversubscription on a busy machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from copra_bench.rl import GRPOConfig, GRPOEngine, LinearBiasAdaptation, VLMPolicy
    from copra_bench.vlm import VLMBackbone

    backbone = VLMBackbone.load(args.model, device=args.device)
    linear = backbone.language_model.layers[0].mlp.down_proj
    print(f"machine: {_machine()}; model {args.model} on {args.device}; K={args.frames} frames of "
          f"{args.size}x{args.size}; max_new_tokens={args.max_new_tokens} (format mode); beta=0.1, 1 iteration; "
          f"reuse_vision={not args.no_reuse_vision}")
    print()
    print("| mode | B | G | rollout s | reward s | reference s | loss fwd s | backward s | step s | tokens/row |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    gen = torch.Generator().manual_seed(0)
    for mode in args.modes:
        for b in args.batch:
            frames = torch.randint(0, 256, (b, args.frames, args.size, args.size, 3), generator=gen, dtype=torch.uint8)
            batch = {"frames": frames, "label": torch.arange(b) % 2}
            for g in args.generations:
                adaptation = LinearBiasAdaptation(linear, num_inputs=b, init_std=0.01)
                config = GRPOConfig(num_generations=g, max_completion_length=args.max_new_tokens, beta=0.1)
                engine = GRPOEngine(VLMPolicy(backbone, mode, reuse_vision=not args.no_reuse_vision), config)
                parts: dict[str, list[float]] = {k: [] for k in ("rollout", "reward", "ref", "fwd", "bwd", "step")}
                lengths = []
                torch.manual_seed(0)
                for i in range(args.repeats + 1):
                    start = time.perf_counter()
                    exp = engine.make_experience(batch, adaptation)
                    loss, stats = engine.loss(batch, exp, adaptation)
                    t0 = time.perf_counter()
                    loss.backward()
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                    backward = time.perf_counter() - t0
                    adaptation.zero_grad()
                    if i == 0:
                        continue  # warm-up
                    parts["rollout"].append(exp.timings["rollout_s"])
                    parts["reward"].append(exp.timings["reward_s"])
                    parts["ref"].append(exp.timings["ref_s"])
                    parts["fwd"].append(stats["timing/loss_forward_s"])
                    parts["bwd"].append(backward)
                    parts["step"].append(time.perf_counter() - start)
                    lengths.append(stats["completion_length"])
                med = {k: statistics.median(v) for k, v in parts.items()}
                print(f"| {mode} | {b} | {g} | {med['rollout']:.3f} | {med['reward']:.4f} | {med['ref']:.3f} | "
                      f"{med['fwd']:.3f} | {med['bwd']:.3f} | {med['step']:.3f} | {statistics.mean(lengths):.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
