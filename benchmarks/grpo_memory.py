"""Memory (and time) of one GRPO step at 7B widths: counted on the meta device, measured on CPU, predicted at depth.

Three subcommands:

* ``count``: the loss phase's saved activations (bytes autograd keeps for backward, counted with
  ``saved_tensors_hooks``) of the Qwen2 decoder at Qwen2-VL-7B / InternVL3-8B widths (hidden 3584, intermediate
  18944, 28 heads, 4 KV heads) with COPRA's injected LoRA on all 7 targets, on the meta device (no memory, no
  compute), at 1 and 2 layers and several row / token counts, with and without LM checkpointing; fits bytes per
  token per layer and the completion logits' bytes per row; counts every shipped 7B/8B config's weights and
  trained tensors (real vocabularies and vision towers) and prints the predicted full-depth peak per card.
* ``measure``: the same loss forward + backward for real on CPU (bf16, 1-2 layers, reduced vocabulary), each
  point in a fresh process: its peak RSS increase against the meta count of the same point.
* ``score``: test-pass speed at 7B width: frozen and COPRA windows/s, COPRA's generator (full 28-layer layout) in
  float32 against bf16 autocast.
* ``step``: one full GRPO step (rollout, reference, loss forward, backward, optimiser) of COPRA through
  ``GRPOEngine`` with its time split and peak memory, at 7B width and any depth (``--lm-layers 28 --device cuda``
  is the paper-config check of ``benchmarks/gpu_overhead.sh``; ``--tiny`` runs the same code on the tiny model).

    .venv/bin/python benchmarks/grpo_memory.py count
    .venv/bin/python benchmarks/grpo_memory.py measure --layers 1 2 --tokens 256 512
    .venv/bin/python benchmarks/grpo_memory.py step --lm-layers 1 --micro 1 4 8 --checkpointing both
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from adaptation_overhead import qwen2_vl_7b_config

from copra_bench.copra.injection import LoRAInjector
from copra_bench.copra.layout import LoRADeltas
from copra_bench.copra.mappings import mapping_for
from copra_bench.vlm.checkpointing import lm_checkpointing
from copra_bench.vlm.families import family_of

GB = 1e9
HIDDEN, KV_DIM, VOCAB_QWEN2VL, VOCAB_INTERNVL3 = 3584, 4 * 128, 152064, 151674
#: The shipped 7B/8B training configs: name -> (model config, tokens per row (prompt + completion), B, G).
#: Prompt tokens: vision tokens of 8 frames at the config's pixel budget (Qwen2-VL: t/2 x h/28 x w/28 merged
#: patches; InternVL: 256 per 448x448 frame) + ~180 text tokens; completion 64 (format mode).
SHIPPED = {
    "copra_qwen2vl_7b UCF 320x240": ("configs/model/copra_qwen2vl_7b.yaml", 560 + 180 + 64),
    "copra_qwen2vl_7b XD (budget: 720-768)": ("configs/model/copra_qwen2vl_7b.yaml", 768 + 180 + 64),
    "lora_grpo_qwen2vl_7b XD (budget)": ("configs/model/lora_grpo_qwen2vl_7b.yaml", 768 + 180 + 64),
    "copra_qwen2vl_7b XD native 1280x720": ("configs/model/copra_qwen2vl_7b.yaml", 2880 + 180 + 64),
    "lora_grpo_qwen2vl_7b UCF 320x240": ("configs/model/lora_grpo_qwen2vl_7b.yaml", 560 + 180 + 64),
    "copra_internvl3_8b (8 x 448x448)": ("configs/model/copra_internvl3_8b.yaml", 2048 + 180 + 64),
    "lora_grpo_internvl3_8b (8 x 448x448)": ("configs/model/lora_grpo_internvl3_8b.yaml", 2048 + 180 + 64),
}


class SavedBytes:
    """Live and peak bytes of the tensors autograd keeps for backward (released with their graph)."""

    def __init__(self, exclude=()) -> None:
        self.live = self.peak = 0
        self.exclude = {id(t) for t in exclude}  # the weights: saved by reference, they cost nothing extra

    def pack(self, tensor):
        ref = _Ref([tensor])
        base = tensor._base if tensor._base is not None else tensor
        size = 0 if id(base) in self.exclude or id(tensor) in self.exclude else tensor.numel() * tensor.element_size()
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(ref, self._release, size)
        return ref

    def _release(self, size: int) -> None:
        self.live -= size

    @staticmethod
    def unpack(ref):
        return ref.holder[0]


class _Ref:
    __slots__ = ("__weakref__", "holder")

    def __init__(self, holder) -> None:
        self.holder = holder


def lm_model(layers: int, vocab: int, device: str, dtype: torch.dtype):
    """A random Qwen2-VL-7B-width model with ``layers`` LM layers and a 1-layer ViT (the loss phase's ViT runs
    without grad: it keeps nothing for backward)."""
    from transformers import Qwen2VLForConditionalGeneration

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2VLForConditionalGeneration(qwen2_vl_7b_config(vocab, layers, 1))
    finally:
        torch.set_default_dtype(previous)
    return model.eval().requires_grad_(False)


def loss_forward(model, rows: int, tokens: int, completion: int, *, checkpointing: bool, counter: SavedBytes):
    """The loss forward of ``rows`` rows of ``tokens`` tokens under COPRA's injected rank-8 LoRA (all layers, all
    7 targets), logits for the last ``completion + 1`` positions, float32 log-softmax per row (as
    ``completion_logprobs``); then backward. Returns the saved-activation peak in bytes."""
    device, dtype = model.device, model.dtype
    counter.exclude |= {id(p) for p in model.parameters()}
    mapping = mapping_for(model)
    layout = mapping.layout(model, rank=8)
    deltas = LoRADeltas.random(layout, 1, device=device)._map(lambda t: t.requires_grad_(True))
    embeds = torch.randn(rows, tokens, HIDDEN, device=device, dtype=dtype)
    position_ids = torch.arange(tokens, device=device).view(1, 1, -1).expand(3, rows, -1)
    lm = model.model.language_model
    backbone = SimpleNamespace(family_spec=family_of(model), model=model)  # what lm_checkpointing reads
    with LoRAInjector(model, mapping, layout).apply(deltas, repeats=rows), \
            torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack), \
            lm_checkpointing(backbone, active=checkpointing):
        hidden = lm(inputs_embeds=embeds, position_ids=position_ids, use_cache=False).last_hidden_state
        logits = model.lm_head(hidden[:, -(completion + 1):])
        target = torch.zeros(completion, dtype=torch.long, device=device)
        total = sum((row[:-1].float().gather(-1, target[:, None]).squeeze(-1)
                     - torch.logsumexp(row[:-1].float(), dim=-1)).sum() for row in logits)
        total.backward()
    return counter.peak


def count(args) -> dict:
    """Meta-device counts, the fit and the predictions."""
    points = []
    for ckpt in (False, True):
        for layers in (1, 2):
            model = lm_model(layers, VOCAB_QWEN2VL, "meta", torch.bfloat16)
            for rows, tokens in ((1, 810), (2, 810), (4, 810), (1, 2300)):
                peak = loss_forward(model, rows, tokens, 64, checkpointing=ckpt, counter=SavedBytes())
                points.append({"checkpointing": ckpt, "layers": layers, "rows": rows, "tokens": tokens,
                               "saved_bytes": peak})
    # per layer: a bytes per token + b bytes per row per token^2 (the attention matrix, which the meta device's
    # math attention keeps; the flash / memory-efficient SDPA kernels a GPU uses keep none of it)
    fit = {}
    for ckpt in (False, True):
        sel = {(p["layers"], p["rows"], p["tokens"]): p["saved_bytes"] for p in points if p["checkpointing"] == ckpt}
        d1, d2 = (sel[(2, 1, t)] - sel[(1, 1, t)] for t in (810, 2300))
        b = (d2 / 2300 - d1 / 810) / (2300 - 810)
        a = d1 / 810 - b * 810
        rows_linear = (sel[(2, 4, 810)] - sel[(1, 4, 810)]) / (sel[(2, 1, 810)] - sel[(1, 1, 810)])
        fit[ckpt] = {"bytes_per_token_per_layer": a, "attention_bytes_per_token2_per_layer": b,
                     "layer_term_4_rows_over_1_row": rows_linear}
    per_row = sel_nock = {(p["layers"], p["rows"], p["tokens"]): p["saved_bytes"] for p in points
                          if not p["checkpointing"]}
    a, b = fit[False]["bytes_per_token_per_layer"], fit[False]["attention_bytes_per_token2_per_layer"]
    per_row = sel_nock[(1, 1, 810)] - (a * 810 + b * 810**2)  # logits of 65 positions x 152064, bf16 + float32
    for f in fit.values():
        f["logits_bytes_per_row"] = per_row
    print("| LM checkpointing | bytes / token / layer | attention bytes / token^2 / layer (eager only) | "
          "logits bytes / row |")
    print("|---|---|---|---|")
    for ckpt, f in fit.items():
        print(f"| {ckpt} | {f['bytes_per_token_per_layer'] / 1e3:.1f} KB | "
              f"{f['attention_bytes_per_token2_per_layer']:.0f} B | {f['logits_bytes_per_row'] / 1e6:.1f} MB |")
    predictions = predict(fit, points)
    return {"points": points, "fit": {str(k): v for k, v in fit.items()}, "predictions": predictions}


def _config(path: str) -> dict:
    import yaml

    return yaml.safe_load((Path(__file__).resolve().parents[1] / path).read_text())["init_args"]


def weight_counts() -> dict[str, dict[str, float]]:
    """Parameter counts (meta device) of the full Qwen2-VL-7B and InternVL3-8B, their COPRA generators and LoRAs."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    from copra_bench.copra.generator import ParameterGenerator

    from transformers import Qwen2VLForConditionalGeneration

    counts = {}
    with torch.device("meta"):
        qwen = Qwen2VLForConditionalGeneration(qwen2_vl_7b_config(VOCAB_QWEN2VL, 28, 32))
        text = qwen.config.text_config.to_dict()
        internvl = InternVLForConditionalGeneration(InternVLConfig(
            vision_config={"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                           "intermediate_size": 4096, "image_size": [448, 448], "patch_size": [14, 14]},
            text_config={**text, "model_type": "qwen2", "vocab_size": VOCAB_INTERNVL3}, image_seq_length=256,
            downsample_ratio=0.5))
    for name, model in (("qwen2vl_7b", qwen), ("internvl3_8b", internvl)):
        mapping = mapping_for(model)
        layout = mapping.layout(model, rank=8)
        with torch.device("meta"):
            generator = ParameterGenerator(layout, vision_dim=HIDDEN, width=512, depth=14, heads=8,
                                           checkpointing=True)
        generator.autocast_dtype = torch.bfloat16
        counter = SavedBytes()  # the generator's activations for backward, 8 inputs of 560 vision tokens
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
            deltas = generator(torch.randn(8, 560 if name == "qwen2vl_7b" else 2048, HIDDEN, device="meta"))
        counts[name] = {"weights": sum(p.numel() for p in model.parameters()),
                        "generator": generator.num_parameters(), "lora": layout.num_lora_values,
                        "generator_saved": counter.peak,
                        "generated_values_bytes": sum(t.numel() * 4 for t in [*deltas.A.values(), *deltas.B.values()])}
    return counts


def predict(fit: dict, points: list) -> list[dict]:
    """Full-depth peak of every shipped config: weights (bf16) + trained tensors (fp32 weight, grad, 2 AdamW
    states) + max(rollout phase, loss phase)."""
    counts = weight_counts()
    rows_out = []
    print("\n| config | micro-batch | LM ckpt | weights GB | trained GB | rollout GB | loss GB | peak GB | 80 GB | 141 GB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (path, tokens) in SHIPPED.items():
        cfg = _config(path)
        family = "internvl3_8b" if "internvl" in path else "qwen2vl_7b"
        c = counts[family]
        g = int(cfg.get("num_generations", 8))
        n_rows = 8 * g  # B = 8 clips per batch (the data configs' batch_size) x G
        micro = cfg.get("loss_micro_batch") or n_rows
        ckpt = bool(cfg.get("lm_checkpointing", False))
        trained = 16 * (c["generator"] if "copra" in path else c["lora"])
        weights = 2 * c["weights"]
        chunk = cfg.get("rollout_batch_size") or n_rows
        # rollout: KV cache of the chunk (K and V, 28 layers, bf16) + the prefill's widest temporaries
        # (gate, up and their product [rows, tokens, 18944] bf16) + last-position logits float32
        rollout = chunk * tokens * 28 * 2 * KV_DIM * 2 + chunk * (tokens - 64) * 18944 * 2 * 3
        a = fit[ckpt]["bytes_per_token_per_layer"]
        loss = micro * (28 * a * tokens + fit[ckpt]["logits_bytes_per_row"])
        if ckpt:  # the layer being recomputed holds its full activations
            loss += micro * fit[False]["bytes_per_token_per_layer"] * tokens
        loss += micro * tokens * 18944 * 2 * 3  # backward's transient widest tensors of one layer
        # COPRA: the generator's saved activations and the 8 inputs' generated LoRA values with their gradient
        generator_acts = 0.0 if "lora" in path else c["generator_saved"] + 2 * c["generated_values_bytes"]
        peak = weights + trained + max(rollout, loss + generator_acts)
        row = {"config": name, "micro_batch": micro, "lm_checkpointing": ckpt, "weights_gb": weights / GB,
               "trained_gb": trained / GB, "rollout_gb": rollout / GB, "loss_gb": loss / GB, "peak_gb": peak / GB}
        rows_out.append(row)
        def fits(card: int, peak: float = peak) -> str:
            return "fits" if peak / GB <= card - 5 else "too big"

        print(f"| {name} | {micro} | {ckpt} | {weights / GB:.1f} | {trained / GB:.2f} | {rollout / GB:.1f} | "
              f"{loss / GB:.1f} | {peak / GB:.1f} | {fits(80)} | {fits(141)} |")
    return rows_out


def measure(args) -> list[dict]:
    """Real CPU loss forward + backward per point in a fresh process: peak RSS increase vs the meta count."""
    out = []
    for layers in args.layers:
        for tokens in args.tokens:
            for ckpt in (False, True):
                cmd = [sys.executable, __file__, "_point", str(layers), str(tokens), str(int(ckpt))]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                point = json.loads(done.stdout.strip().splitlines()[-1])
                meta = loss_forward(lm_model(layers, args.vocab, "meta", torch.bfloat16), 1, tokens, 64,
                                    checkpointing=ckpt, counter=SavedBytes())
                point["meta_saved_bytes"] = meta
                out.append(point)
                print(f"| {layers} | {tokens} | {ckpt} | {point['rss_increase_bytes'] / 1e6:.0f} MB | "
                      f"{point['saved_bytes'] / 1e6:.0f} MB | {meta / 1e6:.0f} MB | {point['seconds']:.1f} |",
                      flush=True)
    return out


def _point(layers: int, tokens: int, ckpt: bool, vocab: int = 4096) -> None:
    model = lm_model(layers, vocab, "cpu", torch.bfloat16)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    saved = loss_forward(model, 1, tokens, 64, checkpointing=ckpt, counter=SavedBytes())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"layers": layers, "tokens": tokens, "checkpointing": ckpt, "saved_bytes": saved,
                      "rss_increase_bytes": peak - before, "seconds": time.perf_counter() - start}))


def main() -> None:
    if sys.argv[1:2] == ["_point"]:
        _point(int(sys.argv[2]), int(sys.argv[3]), bool(int(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("count")
    m = sub.add_parser("measure")
    m.add_argument("--layers", nargs="+", type=int, default=[1, 2])
    m.add_argument("--tokens", nargs="+", type=int, default=[256, 512])
    m.add_argument("--vocab", type=int, default=4096)
    step = sub.add_parser("step")
    score = sub.add_parser("score")
    from grpo_memory_step import add_score_arguments, add_step_arguments, run_scoring, run_steps

    add_step_arguments(step)
    add_score_arguments(score)
    for p in (c, m, step, score):
        p.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.command == "count":
        result = count(args)
    elif args.command == "measure":
        print("| layers | tokens | LM ckpt | measured peak RSS increase | saved (real) | saved (meta) | s |")
        print("|---|---|---|---|---|---|---|")
        result = measure(args)
    elif args.command == "score":
        result = run_scoring(args)
    else:
        result = run_steps(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
