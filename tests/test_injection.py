"""Per-input LoRA injection against a per-sample merged-weight reference, in forward and in generate()."""

from __future__ import annotations

import hashlib

import pytest
import torch

from copra_bench.copra.generator import ParameterGenerator
from copra_bench.copra.injection import InjectionError, LoRAInjector, merged_weights
from copra_bench.copra.layout import LayoutError, LoRADeltas
from copra_bench.copra.mappings import mapping_for
from copra_bench.vlm.backbone import VLMBackbone

MODES = ("fused", "unfused", "naive")


def _videos(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 4, 56, 56, 3), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def tiny64():
    """Tiny Qwen2-VL in float64: the merged-weight reference and the factorised update then agree to ~1e-12, so
    a tolerance of 1e-5 catches any wrong row, layer, target or scale (a wrong one moves logits by ~1)."""
    backbone = VLMBackbone.load("tiny-qwen2-vl")
    backbone.model.double()
    return backbone


def _setup(backbone, mode="fused", **layout_kw):
    mapping = mapping_for(backbone)
    layout = mapping.layout(backbone, rank=4, d_seg=32, **layout_kw)
    return mapping, layout, LoRAInjector(backbone, mapping, layout, mode=mode)


def _random(layout, n, dtype=torch.float64, seed=1):
    return LoRADeltas.random(layout, n, std=0.5, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _checksum(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _generate(backbone, inputs, **kw):
    args = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, output_logits=True,
                return_dict_in_generate=True, pad_token_id=backbone.tokenizer.pad_token_id)
    args.update(kw)
    with torch.no_grad():
        out = backbone.model.generate(**inputs, **args)
    return out.sequences, torch.stack(out.logits, dim=1)


@pytest.mark.parametrize("mode", MODES)
def test_batched_forward_equals_merged_reference(tiny64, mode):
    mapping, layout, injector = _setup(tiny64, mode)
    deltas = _random(layout, 3)
    inputs = tiny64.prepare_inputs(_videos(3), with_answer_prefix=True)
    with torch.no_grad():
        frozen = tiny64.model(**inputs).logits
        with injector.apply(deltas):
            adapted = tiny64.model(**inputs).logits
        for i in range(3):
            with merged_weights(tiny64, deltas, i, mapping=mapping, layout=layout):
                reference = tiny64.model(**inputs).logits[i]
            torch.testing.assert_close(adapted[i], reference, atol=1e-5, rtol=0)
            assert (reference - frozen[i]).abs().max() > 0.1  # the update is large enough to matter
        # hooks are gone and the weights restored
        torch.testing.assert_close(tiny64.model(**inputs).logits, frozen, atol=0, rtol=0)


def test_generate_with_kv_cache_equals_merged_reference(tiny64):
    mapping, layout, injector = _setup(tiny64, layers=[1], targets=["q", "k", "v", "o", "gate", "up", "down"])
    deltas = _random(layout, 3, seed=2)
    inputs = tiny64.prepare_inputs(_videos(3, seed=3), with_answer_prefix=False)
    frozen_seq, _ = _generate(tiny64, inputs)
    with injector.apply(deltas):
        seq, logits = _generate(tiny64, inputs)
    assert not torch.equal(seq, frozen_seq)  # the update changes what is generated
    for i in range(3):
        with merged_weights(tiny64, deltas, i, mapping=mapping, layout=layout):
            ref_seq, ref_logits = _generate(tiny64, inputs)
        assert torch.equal(seq[i], ref_seq[i])
        torch.testing.assert_close(logits[i], ref_logits[i], atol=1e-5, rtol=0)


def test_repeats_share_one_update_in_forward_and_generate(tiny64):
    """num_return_sequences=G rows of one input get that input's update (rows n -> input n // G)."""
    mapping, layout, injector = _setup(tiny64)
    deltas = _random(layout, 2, seed=4)
    inputs = tiny64.prepare_inputs(_videos(2, seed=5), with_answer_prefix=False)
    # top_k=1 sampling is greedy but allows num_return_sequences > 1 (HF's own row expansion)
    with injector.apply(deltas, repeats=3):
        seq, logits = _generate(tiny64, inputs, do_sample=True, top_k=1, num_return_sequences=3)
    for i in range(2):
        with merged_weights(tiny64, deltas, i, mapping=mapping, layout=layout):
            ref_seq, ref_logits = _generate(tiny64, inputs)
        for g in range(3):
            assert torch.equal(seq[3 * i + g], ref_seq[i])
            torch.testing.assert_close(logits[3 * i + g], ref_logits[i], atol=1e-5, rtol=0)
    with pytest.raises(InjectionError, match="repeats"):
        with injector.apply(deltas, repeats=2), torch.no_grad():
            tiny64.model(**inputs)


def test_zero_b_at_init_leaves_the_frozen_model_exactly():
    backbone = VLMBackbone.load("tiny-qwen2-vl")
    mapping = mapping_for(backbone)
    layout = mapping.layout(backbone, rank=8, d_seg=32)
    gen = ParameterGenerator(layout, vision_dim=mapping.vision_dim(backbone), width=32, depth=1, heads=4)
    injector = LoRAInjector(backbone, mapping, layout)
    videos = _videos(3, seed=6)
    with torch.no_grad():
        deltas = gen(mapping.conditioning_tokens(backbone, videos))
    assert all(a.abs().max() > 0 for a in deltas.A.values())
    frozen = backbone.score(videos)
    inputs = backbone.prepare_inputs(videos, with_answer_prefix=False)
    frozen_seq, frozen_logits = _generate(backbone, inputs)
    with injector.apply(deltas):
        adapted = backbone.score(videos)
        seq, logits = _generate(backbone, inputs)
    assert torch.equal(adapted.logit_margin, frozen.logit_margin)
    assert torch.equal(seq, frozen_seq) and torch.equal(logits, frozen_logits)


def test_gradients_reach_generator_and_frozen_vlm_unchanged():
    backbone = VLMBackbone.load("tiny-qwen2-vl")
    mapping = mapping_for(backbone)
    layout = mapping.layout(backbone, rank=4, d_seg=32)
    gen = ParameterGenerator(layout, vision_dim=mapping.vision_dim(backbone), width=32, depth=1, heads=4)
    injector = LoRAInjector(backbone, mapping, layout)
    optimizer = torch.optim.AdamW(gen.parameters(), lr=1e-2)
    videos = _videos(2, seed=7)
    tokens = mapping.conditioning_tokens(backbone, videos)
    before = _checksum(backbone.model)
    head_b = gen.head_b[-1].weight
    for step in range(2):
        optimizer.zero_grad()
        deltas = gen(tokens)
        with injector.apply(deltas):
            out = backbone.score(videos, grad=True)
        out.logit_margin.sum().backward()
        assert head_b.grad.abs().sum() > 0
        if step == 1:  # B != 0 after the first step, so gradients now reach A's head and the blocks
            assert gen.head_a[-1].weight.grad.abs().sum() > 0
            assert gen.blocks[0].cross.q.weight.grad.abs().sum() > 0
        optimizer.step()
    assert all(p.grad is None for p in backbone.model.parameters())
    assert _checksum(backbone.model) == before


def test_fused_gradients_equal_naive_loop(tiny64):
    """In-place baddbmm_ and the shared q/k/v product give the same gradients as the per-input loop."""
    inputs = tiny64.prepare_inputs(_videos(2, seed=8), with_answer_prefix=True)
    grads = {}
    for mode in ("fused", "naive"):
        _, layout, injector = _setup(tiny64, mode)
        deltas = _random(layout, 2, seed=9)
        leaves = [*deltas.A.values(), *deltas.B.values()]
        for leaf in leaves:
            leaf.requires_grad_(True)
        with injector.apply(deltas, repeats=2):
            expanded = {k: v.repeat_interleave(2, dim=0) if k in ("input_ids", "attention_mask") else v
                        for k, v in inputs.items()}
            rows = {k: v for k, v in expanded.items() if k not in ("pixel_values_videos", "video_grid_thw",
                                                                   "mm_token_type_ids")}
            logits = tiny64.model(**rows).logits[:, -1]
        (logits * torch.linspace(-1, 1, logits.shape[-1], dtype=logits.dtype)).sum().backward()
        grads[mode] = [leaf.grad for leaf in leaves]
    for fused, naive in zip(grads["fused"], grads["naive"], strict=True):
        assert fused.abs().max() > 0
        torch.testing.assert_close(fused, naive, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("name", ["tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-internvl"])
def test_other_families_forward_equals_merged_reference(name):
    backbone = VLMBackbone.load(name)
    backbone.model.double()
    mapping, layout, injector = _setup(backbone)
    deltas = _random(layout, 2, seed=10)
    inputs = backbone.prepare_inputs(_videos(2, seed=11), with_answer_prefix=True)
    with torch.no_grad():
        with injector.apply(deltas):
            adapted = backbone.model(**inputs).logits
        for i in range(2):
            with merged_weights(backbone, deltas, i, mapping=mapping, layout=layout):
                torch.testing.assert_close(adapted[i], backbone.model(**inputs).logits[i], atol=1e-5, rtol=0)


def test_misuse_errors(tiny64):
    _, layout, injector = _setup(tiny64)
    deltas = _random(layout, 1)
    with injector.apply(deltas), pytest.raises(InjectionError, match="nested"):
        with injector.apply(deltas):
            pass
    _, other, _ = _setup(tiny64, layers=[0])
    with pytest.raises(LayoutError, match="layers"):
        with injector.apply(_random(other, 1)):
            pass
    with pytest.raises(InjectionError, match="mode"):
        LoRAInjector(tiny64, mode="merged")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cuda_injection_matches_naive_loop_and_keeps_dtype(dtype):
    backbone = VLMBackbone.load("tiny-qwen2-vl", dtype=str(dtype).removeprefix("torch."), device="cuda")
    _, layout, fused = _setup(backbone)
    naive = LoRAInjector(backbone, fused.mapping, layout, mode="naive")
    deltas = _random(layout, 3, dtype=torch.float32, seed=12).to("cuda")  # generator output is float32
    inputs = backbone.prepare_inputs(_videos(3, seed=13), with_answer_prefix=True)
    with torch.no_grad():
        with fused.apply(deltas):
            out = backbone.model(**inputs).logits
        with naive.apply(deltas):
            ref = backbone.model(**inputs).logits
    assert out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-1  # bf16: the update moves logits by ~1
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)
