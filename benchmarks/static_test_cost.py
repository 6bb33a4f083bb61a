"""Test-time cost of the static baselines against the frozen model (issue 6 figures).

Same backbone, same batch of B windows, through the baselines' own modules: frozen; static LoRA (the
:class:`~copra_bench.adapters.StaticLoRA` of LoRA SFT and static GRPO) unmerged and merged, as the
methods score at test time; soft prompt (:class:`~copra_bench.baselines.prompt_tuning.SoftPrompt`, n tokens).
Two workloads: score (one forward, last-position logits only, what the test loop runs) and ``generate()`` of N new
tokens (greedy, KV cache). Best wall time of ``--iters`` rounds, the variants interleaved within a round.

CPU, tiny model::

    .venv/bin/python benchmarks/static_test_cost.py

A 7B-wide model on CPU with fewer layers (random weights; nothing downloaded), or the full 7B on a GPU::

    .venv/bin/python benchmarks/static_test_cost.py --size 7b --lm-layers 2 --vision-depth 2 --iters 3
    .venv/bin/python benchmarks/static_test_cost.py --size 7b --device cuda --dtype bfloat16 --frame-size 336 672
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from adaptation_overhead import build_backbone, interleaved
from copra_bench.adapters import StaticLoRA
from copra_bench.baselines.prompt_tuning.torch_model import SoftPrompt


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=("tiny", "7b"), default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--frame-size", type=int, nargs=2, default=(56, 56), metavar=("H", "W"))
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--virtual-tokens", type=int, default=20)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--lm-layers", type=int, default=28)
    p.add_argument("--vision-depth", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    if torch.device(args.device).type == "cpu":
        torch.set_num_threads(args.threads)

    backbone = build_backbone(args)
    h, w = args.frame_size
    g = torch.Generator().manual_seed(0)
    videos = torch.randint(0, 256, (args.batch, args.frames, h, w, 3), dtype=torch.uint8, generator=g)
    prompt = SoftPrompt(backbone, num_virtual_tokens=args.virtual_tokens)
    lora = StaticLoRA(backbone, rank=args.rank, alpha=2.0 * args.rank)
    with torch.no_grad():
        for param in lora.lora_parameters():
            param.normal_(0, 0.02)

    def score():
        backbone.score(videos)

    def generate():
        backbone.generate(videos, max_new_tokens=args.new_tokens)

    def under(adapter, fn):
        def run():
            with adapter.adaptation(1):
                fn()
        return run

    rounds = {}
    for name, fn in (("score", score), ("generate", generate)):
        best = interleaved({"frozen": fn, "lora_unmerged": under(lora, fn), "soft_prompt": under(prompt, fn)}, args)
        lora.merge()
        merged = interleaved({"frozen": fn, "lora_merged": under(lora, fn)}, args)
        lora.unmerge()
        rounds[name] = {**best, "lora_merged": merged["lora_merged"], "frozen_merged_round": merged["frozen"]}

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, device {args.device}, "
          f"{args.dtype}, size {args.size} (LM layers {args.lm_layers if args.size == '7b' else 'tiny'}), "
          f"batch {args.batch} x {args.frames} frames {h}x{w}, {args.new_tokens} new tokens, rank {args.rank}, "
          f"{args.virtual_tokens} virtual tokens, threads {args.threads}")
    print("| variant | score s | x frozen | generate s | x frozen |")
    print("|---|---|---|---|---|")
    for variant in ("frozen", "lora_unmerged", "lora_merged", "soft_prompt"):
        cells = []
        for work in ("score", "generate"):
            base = rounds[work]["frozen_merged_round" if variant == "lora_merged" else "frozen"]
            cells += [f"{rounds[work][variant]:.3f}", f"{rounds[work][variant] / base:.2f}"]
        print(f"| {variant} | {' | '.join(cells)} |")
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=2))
    return rounds


if __name__ == "__main__":
    main()
