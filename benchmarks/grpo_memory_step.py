"""``grpo_memory.py step``: one COPRA GRPO step through ``GRPOEngine`` (rollout, reference, loss forward,
backward, optimiser) with its time split and peak memory, at 7B width and any depth, or on the tiny model.

CPU (7B width, 1 LM layer, micro-batches 1/4/8, with and without LM checkpointing)::

    .venv/bin/python benchmarks/grpo_memory.py step --lm-layers 1 --micro 1 4 8 --checkpointing both

GPU, the paper config at full depth (random weights, bf16; what ``benchmarks/gpu_overhead.sh`` runs)::

    .venv/bin/python benchmarks/grpo_memory.py step --device cuda --lm-layers 28 --vision-depth 32 --inputs 8 \\
        --frames 8 --frame-size 240 320 --max-new-tokens 64 --config configs/model/copra_qwen2vl_7b.yaml
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def add_step_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiny", action="store_true", help="the built-in tiny Qwen2-VL (checks the code path)")
    p.add_argument("--lm-layers", type=int, default=1)
    p.add_argument("--vision-depth", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--inputs", type=int, default=1, help="B, clips per batch")
    p.add_argument("--generations", type=int, default=8, help="G")
    p.add_argument("--micro", nargs="+", default=["1", "4", "8"], help="loss_micro_batch values ('none': all rows)")
    p.add_argument("--checkpointing", choices=("off", "on", "both"), default="both")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--frame-size", nargs=2, type=int, default=[112, 112])
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--config", default=None, help="a shipped model config: its pixel budget, micro-batch, G, beta")
    p.add_argument("--warmup", type=int, default=0, help="unmeasured steps first (GPU: 1)")


def _backbone(args):
    """The tiny model, or a random Qwen2-VL-7B-width one with the tiny tokenizer; on CPU its vocabulary is the
    tokenizer's (~400 ids: the 152,064-row embedding and LM head would take 4.4 GB in float32 and are counted by
    ``grpo_memory.py count`` instead), on a GPU the real one."""
    from adaptation_overhead import build_backbone, qwen2_vl_7b_config

    ns = argparse.Namespace(size="tiny" if args.tiny else "7b", frame_size=args.frame_size, dtype=args.dtype,
                            device=args.device, lm_layers=args.lm_layers, vision_depth=args.vision_depth)
    if args.tiny or torch.device(args.device).type != "cpu":
        backbone = build_backbone(ns)
    else:
        from transformers import Qwen2VLForConditionalGeneration

        from copra_bench.vlm import VLMBackbone
        from copra_bench.vlm.families.qwen2_vl import build_tiny
        from copra_bench.vlm.tiny_tokenizer import vocab_size

        _, processor = build_tiny()
        previous = torch.get_default_dtype()
        torch.set_default_dtype(getattr(torch, args.dtype))
        try:
            model = Qwen2VLForConditionalGeneration(
                qwen2_vl_7b_config(vocab_size(processor.tokenizer), args.lm_layers, args.vision_depth))
        finally:
            torch.set_default_dtype(previous)
        gen = model.eval().generation_config
        gen.eos_token_id, gen.pad_token_id = model.config.text_config.eos_token_id, model.config.text_config.pad_token_id
        h, w = args.frame_size
        backbone = VLMBackbone(model, processor, family="qwen2_vl", name="random-qwen2-vl-7b-width",
                               video_kwargs={"size": {"shortest_edge": 28 * 28, "longest_edge": h * w}})
    if args.shipped:
        budget = (args.shipped.get("backbone_options") or {}).get("video_kwargs")
        if budget:
            backbone.video_kwargs = dict(budget)
    return backbone


def _peak_bytes(device: str) -> int:
    if torch.device(device).type == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the process's peak so far (monotone)


def run_steps(args) -> list[dict]:
    import yaml

    from copra_bench.copra.torch_model import COPRAModel
    from copra_bench.rl import GRPOConfig, GRPOEngine, VLMPolicy

    args.shipped = yaml.safe_load((ROOT / args.config).read_text())["init_args"] if args.config else {}
    backbone = _backbone(args)
    layers = backbone.family_spec.decoder_layers_of(backbone.model)
    width = 32 if args.tiny else 512
    model = COPRAModel(backbone, rank=8, width=width, depth=max(1, len(layers) // 2), heads=8 if width > 32 else 2,
                       segment_size=512 if width > 32 else 16, checkpointing=True).to(args.device)
    optimizer = torch.optim.AdamW(model.generator.parameters(), lr=1e-6)
    g = int(args.shipped.get("num_generations", args.generations))
    frames = torch.randint(0, 256, (args.inputs, args.frames, *args.frame_size, 3), dtype=torch.uint8)
    batch = {"frames": frames, "label": torch.arange(args.inputs) % 2}
    micros = [None if m == "none" else int(m) for m in args.micro]
    if args.shipped and args.micro == ["1", "4", "8"]:
        micros = [args.shipped.get("loss_micro_batch")]
    ckpts = {"off": [False], "on": [True], "both": [False, True]}[args.checkpointing]
    if args.shipped and args.checkpointing == "both":
        ckpts = [bool(args.shipped.get("lm_checkpointing", False))]
    print(f"model: {'tiny' if args.tiny else f'7B width, {len(layers)} LM layers'} on {args.device} "
          f"({args.dtype}); B={args.inputs}, G={g}, {args.frames} frames of {args.frame_size}, "
          f"{args.max_new_tokens} new tokens; generator width {width}, {model.generator.num_parameters() / 1e6:.1f}M")
    print("| micro-batch | LM ckpt | generator s | rollout s | reference s | loss fwd s | backward s | optimiser s | "
          "step s | tokens/row | peak GB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for ckpt in ckpts:
        for micro in micros:
            config = GRPOConfig(num_generations=g, max_completion_length=args.max_new_tokens,
                                beta=float(args.shipped.get("beta", 0.1)), loss_micro_batch=micro,
                                rollout_batch_size=args.shipped.get("rollout_batch_size"))
            engine = GRPOEngine(VLMPolicy(backbone, "format", checkpointing=ckpt), config)
            for i in range(args.warmup + 1):
                if torch.device(args.device).type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                row = _one_step(model, engine, optimizer, batch, args.device)
            row.update(micro_batch=micro, lm_checkpointing=ckpt, peak_bytes=_peak_bytes(args.device))
            results.append(row)
            print(f"| {micro or 'all'} | {ckpt} | {row['generator_s']:.2f} | {row['rollout_s']:.2f} | "
                  f"{row['ref_s']:.2f} | {row['loss_forward_s']:.2f} | {row['backward_s']:.2f} | "
                  f"{row['optimiser_s']:.3f} | {row['step_s']:.2f} | {row['tokens_per_row']:.0f} | "
                  f"{row['peak_bytes'] / 1e9:.2f} |", flush=True)
    return results


def _now(device: str) -> float:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def _one_step(model, engine, optimizer, batch, device) -> dict:
    start = _now(device)
    tokens = model.condition_tokens(batch["frames"])
    deltas = model.generator(tokens)
    generator_s = _now(device) - start
    experience = engine.make_experience(batch, model.adaptation(deltas.detach()))
    optimizer.zero_grad(set_to_none=True)
    _, stats = engine.backward(batch, experience, model.adaptation(deltas))
    t0 = _now(device)
    torch.nn.utils.clip_grad_norm_(model.generator.parameters(), 1.0)
    optimizer.step()
    optimiser_s = _now(device) - t0
    inputs = experience.rollouts.extras["inputs"]
    prompt = int(inputs["input_ids"].shape[1])
    return {"generator_s": generator_s, "rollout_s": stats["timing/rollout_s"], "ref_s": stats["timing/ref_s"],
            "loss_forward_s": stats["timing/loss_forward_s"], "backward_s": stats["timing/backward_s"],
            "optimiser_s": optimiser_s, "step_s": _now(device) - start,
            "tokens_per_row": prompt + stats["completion_length"], "prompt_tokens": prompt}


def add_score_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lm-layers", type=int, default=1)
    p.add_argument("--vision-depth", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--windows", type=int, default=2, help="windows per batch")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--frame-size", nargs=2, type=int, default=[240, 320])
    p.add_argument("--repeats", type=int, default=2)


def run_scoring(args) -> dict:
    """Test-pass speed at 7B width: frozen vs COPRA windows/s (``--lm-layers`` deep), and COPRA's generator for
    the full 28-layer layout in float32 against bf16 autocast."""
    import statistics

    from grpo_memory import lm_model

    from copra_bench.copra.generator import ParameterGenerator
    from copra_bench.copra.mappings import mapping_for
    from copra_bench.copra.torch_model import COPRAModel

    args.shipped = yaml_config("configs/model/copra_qwen2vl_7b.yaml")
    args.tiny, args.dtype = False, "bfloat16"
    backbone = _backbone(args)
    frames = torch.randint(0, 256, (args.windows, args.frames, *args.frame_size, 3), dtype=torch.uint8)
    model = COPRAModel(backbone, rank=8, width=512, depth=max(1, args.lm_layers // 2), heads=8).to(args.device)

    def timed(fn) -> float:
        fn()
        runs = []
        for _ in range(args.repeats):
            start = _now(args.device)
            fn()
            runs.append(_now(args.device) - start)
        return statistics.median(runs)

    out = {"frozen_s": timed(lambda: backbone.score(frames))}
    for name, dtype in (("copra_fp32_generator_s", None), ("copra_autocast_generator_s", torch.bfloat16)):
        model.generator.autocast_dtype = dtype
        with torch.no_grad():
            out[name] = timed(lambda: model.score_self_conditioned(frames))
    layout = mapping_for(lm_model(28, 4096, "meta", torch.bfloat16)).layout(lm_model(28, 4096, "meta", torch.bfloat16))
    generator = ParameterGenerator(layout, vision_dim=3584, width=512, depth=14, heads=8).to(args.device)
    tokens = [torch.randn(560, 3584, device=args.device) for _ in range(args.windows)]
    for name, dtype in (("generator28_fp32_s", None), ("generator28_autocast_s", torch.bfloat16)):
        generator.autocast_dtype = dtype
        with torch.no_grad():
            out[name] = timed(lambda: generator(tokens))
    prompt = int(backbone.prepare_inputs(frames[:1], with_answer_prefix=True)["input_ids"].shape[1])
    print(f"7B width, {args.lm_layers} LM layer(s), {args.vision_depth} ViT layer(s), {args.windows} windows of "
          f"{args.frames} x {args.frame_size} ({prompt} tokens), bf16 on {args.device}; generator: 28-layer layout, "
          f"{generator.num_parameters() / 1e6:.1f}M parameters")
    print("| frozen windows/s | COPRA windows/s (generator fp32) | COPRA windows/s (generator bf16 autocast) | "
          "28-layer generator fp32 s/window | bf16 autocast s/window |")
    print("|---|---|---|---|---|")
    w = args.windows
    print(f"| {w / out['frozen_s']:.2f} | {w / out['copra_fp32_generator_s']:.2f} | "
          f"{w / out['copra_autocast_generator_s']:.2f} | {out['generator28_fp32_s'] / w:.3f} | "
          f"{out['generator28_autocast_s'] / w:.3f} |")
    return {**out, "prompt_tokens": prompt, "windows": w}


def yaml_config(path: str) -> dict:
    import yaml

    return yaml.safe_load((ROOT / path).read_text())["init_args"]
