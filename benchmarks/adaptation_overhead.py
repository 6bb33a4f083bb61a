"""Overhead of per-input adaptation against the frozen model (issue 5 figures).

Same backbone, same batch of B windows: frozen; COPRA per-input injection (fused, unfused, naive per-input loop);
static LoRA via peft (unmerged, merged). Two workloads: score mode (one forward, last-position logits only) and
``generate()`` of N new tokens (greedy, KV cache, exactly N tokens); plus parameter generation alone (vision
encoder on the K frames + generator forward). Best wall time of ``--iters`` runs after ``--warmup``.

CPU, tiny model (a few minutes on 2 cores)::

    .venv/bin/python benchmarks/adaptation_overhead.py

GPU, random-weight Qwen2-VL-7B-sized model in bf16 (8 windows x ~1230 tokens; nothing downloaded)::

    .venv/bin/python benchmarks/adaptation_overhead.py --size 7b --device cuda --dtype bfloat16 \
        --frame-size 336 672 --iters 5 --json /tmp/overhead_7b.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from copra_bench.copra.generator import ParameterGenerator
from copra_bench.copra.injection import LoRAInjector
from copra_bench.copra.layout import LoRADeltas
from copra_bench.copra.mappings import mapping_for
from copra_bench.vlm.backbone import VLMBackbone

_LM_LINEARS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def qwen2_vl_7b_config(vocab_size: int = 152064, lm_layers: int = 28, vision_depth: int = 32):
    """Qwen2-VL-7B-Instruct dimensions (config.json of the release) with the tiny tokenizer's special ids."""
    from transformers import Qwen2VLConfig

    from copra_bench.vlm.tiny import qwen_token_config
    from copra_bench.vlm.tiny_tokenizer import build_byte_tokenizer, token_ids

    ids = token_ids(build_byte_tokenizer())
    return Qwen2VLConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=3584, intermediate_size=18944, num_hidden_layers=lm_layers,
            num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(depth=vision_depth, embed_dim=1280, hidden_size=3584, mlp_ratio=4, num_heads=16,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        **qwen_token_config(ids),
    )


def build_backbone(args) -> VLMBackbone:
    h, w = args.frame_size
    video_kwargs = {"size": {"shortest_edge": 28 * 28, "longest_edge": h * w}}
    if args.size == "tiny":
        return VLMBackbone.load("tiny-qwen2-vl", dtype=args.dtype, device=args.device, video_kwargs=video_kwargs)
    from transformers import Qwen2VLForConditionalGeneration

    from copra_bench.vlm.families.qwen2_vl import build_tiny

    _, processor = build_tiny()
    dtype = getattr(torch, args.dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(args.device):  # random init directly on the device: seconds, not minutes on CPU
            model = Qwen2VLForConditionalGeneration(
                qwen2_vl_7b_config(lm_layers=args.lm_layers, vision_depth=args.vision_depth))
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id = model.config.text_config.eos_token_id, model.config.text_config.pad_token_id
    return VLMBackbone(model, processor, family="qwen2_vl", name="random-qwen2-vl-7b", video_kwargs=video_kwargs)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, args) -> float:
    """Best of ``--iters`` runs (the least disturbed by other processes on a shared machine)."""
    return interleaved({"x": fn}, args)["x"]


def interleaved(fns: dict, args) -> dict[str, float]:
    """Best time of each function over ``--iters`` rounds, the functions run in turn within a round so that a
    busy spell of a shared machine hits all of them alike."""
    for fn in fns.values():
        for _ in range(args.warmup):
            fn()
    best = {name: float("inf") for name in fns}
    for _ in range(args.iters):
        for name, fn in fns.items():
            _sync(args.device)
            t0 = time.perf_counter()
            fn()
            _sync(args.device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=("tiny", "7b"), default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--batch", type=int, default=8, help="inputs (windows) per batch")
    p.add_argument("--frames", type=int, default=8, help="K frames per window")
    p.add_argument("--frame-size", type=int, nargs=2, default=(56, 56), metavar=("H", "W"))
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--d-seg", type=int, default=512)
    p.add_argument("--gen-width", type=int, default=512)
    p.add_argument("--gen-depth", type=int, default=None, help="default: half the LM depth")
    p.add_argument("--gen-heads", type=int, default=8)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--skip", nargs="*", default=(), help="variants to skip: naive unfused peft generate")
    p.add_argument("--lm-layers", type=int, default=28, help="--size 7b: LM depth (28; fewer for a smoke run)")
    p.add_argument("--vision-depth", type=int, default=32, help="--size 7b: ViT depth (32; fewer for a smoke run)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 on CPU)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    if args.threads or torch.device(args.device).type == "cpu":
        torch.set_num_threads(args.threads or 1)

    backbone = build_backbone(args)
    model, device = backbone.model, args.device
    mapping = mapping_for(backbone)
    layout = mapping.layout(backbone, rank=args.rank, d_seg=args.d_seg)
    g = torch.Generator().manual_seed(0)
    h, w = args.frame_size
    videos = torch.randint(0, 256, (args.batch, args.frames, h, w, 3), dtype=torch.uint8, generator=g)
    score_inputs = backbone.prepare_inputs(videos, with_answer_prefix=True)
    gen_inputs = backbone.prepare_inputs(videos, with_answer_prefix=False)
    deltas = LoRADeltas.random(layout, args.batch, scale=args.alpha / args.rank, generator=g,
                               dtype=backbone.dtype, device=device)
    n_tok = args.new_tokens
    pad = backbone.tokenizer.pad_token_id

    def forward():
        with torch.no_grad():
            model(**score_inputs, logits_to_keep=1, use_cache=False)

    def generate(m=model):
        with torch.no_grad():
            m.generate(**gen_inputs, max_new_tokens=n_tok, min_new_tokens=n_tok, do_sample=False, pad_token_id=pad)

    def adapted(fn, injector):
        def run():
            with injector.apply(deltas):
                fn()
        return run

    print(f"backbone {backbone.name} ({args.dtype}, {device}); {layout.describe()}", flush=True)
    print(f"batch {args.batch} x {score_inputs['input_ids'].shape[1]} tokens (score prompt)", flush=True)
    forwards, generates = {"frozen": forward}, {"frozen": generate}
    for mode in ("fused", "unfused", "naive"):
        if mode not in args.skip:
            inj = LoRAInjector(backbone, mapping, layout, mode=mode)
            forwards[f"copra_{mode}"], generates[f"copra_{mode}"] = adapted(forward, inj), adapted(generate, inj)
    peft_model = None
    if "peft" not in args.skip:
        # static LoRA on a copy of the model (peft rewrites the modules it adapts); merged afterwards
        import copy

        from peft import LoraConfig, get_peft_model

        peft_model = get_peft_model(copy.deepcopy(model),
                                    LoraConfig(r=args.rank, lora_alpha=args.alpha, target_modules=_LM_LINEARS))

        def peft_forward():
            with torch.no_grad():
                peft_model(**score_inputs, logits_to_keep=1, use_cache=False)

        forwards["peft_unmerged"], generates["peft_unmerged"] = peft_forward, lambda: generate(peft_model)

    def measure(fwds: dict, gens: dict) -> dict[str, dict[str, float]]:
        out = {name: {"forward_s": t} for name, t in interleaved(fwds, args).items()}
        if "generate" not in args.skip:
            for name, t in interleaved(gens, args).items():
                out[name]["generate_s"] = t
        for name, row in out.items():
            for k in list(row):
                row[k.replace("_s", "_x_frozen")] = row[k] / out["frozen"][k]
            print(f"  {name:<22} " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
        return out

    results: dict[str, dict[str, float]] = measure(forwards, generates)
    if peft_model is not None:
        peft_model.merge_adapter()  # merged static LoRA: compared with a fresh round of the frozen model
        merged = measure({"frozen": forward, "peft_merged": forwards["peft_unmerged"]},
                         {"frozen": generate, "peft_merged": generates["peft_unmerged"]})
        results["peft_merged"] = merged["peft_merged"]
        del peft_model

    # parameter generation alone: condition encoder (vision tokens of the K frames) + generator
    depth = args.gen_depth if args.gen_depth is not None else max(1, mapping.num_layers(backbone) // 2)
    gen = ParameterGenerator(layout, vision_dim=mapping.vision_dim(backbone), width=args.gen_width, depth=depth,
                             heads=args.gen_heads, alpha=args.alpha).to(device)
    tokens = mapping.conditioning_tokens(backbone, videos)
    use_autocast = args.dtype != "float32" and torch.device(device).type == "cuda"

    def generate_params():
        with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=getattr(torch, args.dtype),
                                             enabled=use_autocast):
            gen(tokens)

    times = interleaved({"vision": lambda: mapping.conditioning_tokens(backbone, videos),
                         "generator": generate_params}, args)
    results["param_generation"] = {
        "vision_tokens_s": times["vision"],
        "generator_s": times["generator"],
        "generator_params": gen.num_parameters(),
        "lora_values_per_input": gen.num_generated_values(),
        "generator_depth": depth,
    }
    print(f"  param_generation       {results['param_generation']}", flush=True)

    report = {
        "machine": {
            "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.device(device).type == "cuda" else None,
        },
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items() if k != "json"},
        "layout": layout.describe(),
        "prompt_tokens": int(score_inputs["input_ids"].shape[1]),
        "results": results,
    }
    print("\nvariant                 forward s  (x frozen)   generate s  (x frozen)")
    for name, row in results.items():
        if name == "param_generation":
            continue
        gen_txt = f"{row['generate_s']:10.4f}  ({row['generate_x_frozen']:.2f}x)" if "generate_s" in row else ""
        print(f"{name:<22} {row['forward_s']:10.4f}  ({row['forward_x_frozen']:.2f}x)   {gen_txt}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
