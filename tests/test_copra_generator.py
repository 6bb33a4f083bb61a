"""ParameterGenerator: token layout, B = 0 at init, padding mask, global latent switch, gradients."""

from __future__ import annotations

import pytest
import torch

from copra_bench.copra.generator import (
    GeneratorError,
    ParameterGenerator,
    pad_vision_tokens,
)
from copra_bench.copra.layout import LoRALayout

# Small layout with sizes that are not multiples of d_seg (last segments cut short) and a shared-input group.
SHAPES = {"q": (24, 24), "k": (24, 8), "v": (24, 8), "o": (24, 24), "gate": (24, 40), "up": (24, 40), "down": (40, 24)}


def _layout(targets=tuple(SHAPES), layers=(0, 1, 2), rank=3, d_seg=16) -> LoRALayout:
    return LoRALayout(layers=layers, targets=targets, shapes={t: SHAPES[t] for t in targets}, rank=rank, d_seg=d_seg,
                      groups=(("q", "k", "v"), ("gate", "up")))


def _generator(**kw) -> ParameterGenerator:
    torch.manual_seed(0)
    args = dict(vision_dim=12, width=32, depth=2, heads=4)
    args.update(kw)
    return ParameterGenerator(_layout(), **args)


def _randomise_b_head(gen: ParameterGenerator) -> None:
    with torch.no_grad():
        gen.head_b[-1].weight.normal_(0, 0.1)
        gen.head_b[-1].bias.normal_(0, 0.1)


def test_shapes_scale_and_zero_b_at_init():
    gen = _generator(alpha=6.0)
    tokens = [torch.randn(5, 12), torch.randn(9, 12)]
    deltas = gen(tokens)
    assert deltas.scale == 2.0 and deltas.layers == (0, 1, 2) and deltas.targets == tuple(SHAPES)
    for t, (i, o) in SHAPES.items():
        assert deltas.A[t].shape == (2, 3, 3, i) and deltas.B[t].shape == (2, 3, o, 3)
        assert torch.count_nonzero(deltas.B[t]) == 0  # exactly zero, not small
        assert deltas.A[t].abs().min() > 0
    assert gen.num_generated_values() == 3 * 3 * sum(i + o for i, o in SHAPES.values())
    assert gen.num_parameters() == sum(p.numel() for p in gen.parameters())


def test_rank_anchored_segments_land_in_the_right_columns():
    """Token j of a matrix emits an r x d_seg slice = columns [j*d_seg, (j+1)*d_seg) of all r rank rows."""
    gen = _generator()
    lay = gen.layout
    r, d, L, na = lay.rank, lay.d_seg, lay.num_layers, lay.num_a_tokens
    S = lay.tokens_per_layer
    # value = 1e6*layer + 1e3*token + 10*row + col-in-segment/100: readable code of where it came from
    code = torch.zeros(1, L, S, r, d, dtype=torch.float64)
    for l in range(L):
        for s in range(S):
            for row in range(r):
                for c in range(d):
                    code[0, l, s, row, c] = 1e6 * l + 1e3 * s + 10 * row + c / 100
    flat = code.reshape(1, L, S, r * d)
    deltas = gen._assemble(flat[:, :, :na], flat[:, :, na:], na)
    for (t, m), sl in lay.token_slices.items():
        size = SHAPES[t][0] if m == "A" else SHAPES[t][1]
        got = deltas.A[t] * size**0.5 if m == "A" else deltas.B[t].transpose(-1, -2)  # -> [1, L, r, size]
        assert got.shape[-1] == size
        for l in range(L):
            for row in range(r):
                for col in range(size):
                    want = 1e6 * l + 1e3 * (sl.start + col // d) + 10 * row + (col % d) / 100
                    assert abs(float(got[0, l, row, col]) - want) < 1e-6 * max(1.0, want)


def test_padding_mask_gives_the_same_deltas_as_alone():
    gen = _generator()
    _randomise_b_head(gen)
    short, long_ = torch.randn(4, 12), torch.randn(11, 12)
    with torch.no_grad():
        both = gen([short, long_])
        alone = [gen([short]), gen([long_])]
        padded, mask = pad_vision_tokens([short, long_])
        unmasked = gen(padded)  # padding rows treated as real tokens
        masked = gen(padded, mask)
    for i in range(2):
        for t in SHAPES:
            torch.testing.assert_close(both.A[t][i], alone[i].A[t][0], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(both.B[t][i], alone[i].B[t][0], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(masked.B[t][i], both.B[t][i])
    # without the mask the short input attends to zero padding and changes: the mask is doing the work
    assert (unmasked.B["q"][0] - alone[0].B["q"][0]).abs().max() > 1e-4


def test_global_latent_switch():
    on, off = _generator(global_latent=True), _generator(global_latent=False)
    lay = on.layout
    assert off.prior is None and on.prior.shape == (lay.num_layers, lay.tokens_per_layer, 32)
    assert on.num_parameters() - off.num_parameters() == lay.num_tokens * 32
    assert off(torch.randn(2, 3, 12)).A["q"].shape == (2, 3, 3, 24)


def test_gradients_reach_the_generator():
    gen = _generator()
    deltas = gen([torch.randn(6, 12), torch.randn(3, 12)])
    loss = sum((deltas.B[t] * torch.randn_like(deltas.B[t])).sum() for t in SHAPES)
    loss = loss + sum(deltas.A[t].square().sum() for t in SHAPES)
    loss.backward()
    assert gen.head_b[-1].weight.grad.abs().sum() > 0
    for name in ("head_a.1.weight", "blocks.0.cross.kv.weight", "blocks.1.intra.q.weight", "blocks.1.inter.q.weight",
                 "prior", "slot_embed", "vision_proj.weight"):
        assert dict(gen.named_parameters())[name].grad.abs().sum() > 0, name


def test_bad_inputs():
    gen = _generator()
    with pytest.raises(GeneratorError, match="D=5"):
        gen([torch.randn(3, 5)])
    with pytest.raises(GeneratorError, match="divisible"):
        _generator(width=30, heads=4)
    with pytest.raises(GeneratorError, match="non-empty"):
        gen([torch.randn(0, 12)])


def test_activation_checkpointing_matches():
    gen = _generator()
    _randomise_b_head(gen)
    x = torch.randn(2, 5, 12)
    ref = gen(x).B["up"]
    gen.checkpointing = True
    out = gen(x).B["up"]
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    assert gen.blocks[0].mlp[0].weight.grad is not None


def test_for_backbone_config_knobs():
    from copra_bench.vlm.backbone import VLMBackbone

    backbone = VLMBackbone.load("tiny-qwen2-vl")
    gen = ParameterGenerator.for_backbone(backbone, rank=2, alpha=4, targets=["v", "q"], layers=[1], d_seg=8,
                                          width=16, heads=2, global_latent=False)
    assert gen.depth == 1 and gen.scale == 2.0 and gen.prior is None  # depth: half of the 2 LM layers
    assert gen.layout.layers == (1,) and gen.layout.targets == ("q", "v") and gen.layout.d_seg == 8
    assert gen.num_generated_values() == 2 * (64 + 64 + 64 + 32)  # q: 64 -> 64, v: 64 -> 32 (2 kv heads x 16)


def test_deltas_select_cat_and_nonfinite():
    from copra_bench.copra.layout import LayoutError, LoRADeltas

    lay = _layout()
    deltas = LoRADeltas.random(lay, 3, generator=torch.Generator().manual_seed(0))
    deltas.check(lay)
    back = LoRADeltas.cat([deltas.select(2), deltas.select([0, 1])])
    assert torch.equal(back.A["down"][0], deltas.A["down"][2]) and torch.equal(back.B["q"][1:], deltas.B["q"][:2])
    assert deltas.nonfinite_inputs() == []
    deltas.B["up"][1, 0, 5, 1] = float("nan")
    deltas.A["k"][2, 2, 0, 0] = float("inf")
    assert deltas.nonfinite_inputs() == [1, 2]
    with pytest.raises(LayoutError):
        LoRADeltas.cat([deltas, LoRADeltas.random(lay, 1, scale=1.0)])


def test_videos_with_different_token_counts_get_the_same_update_as_alone():
    """Real conditioning tokens: Qwen2-VL gives a 56x56 clip fewer vision tokens than a 112x56 one."""
    from copra_bench.copra.mappings import mapping_for
    from copra_bench.vlm.backbone import VLMBackbone

    size = {"shortest_edge": 784, "longest_edge": 112 * 56}
    backbone = VLMBackbone.load("tiny-qwen2-vl", video_kwargs={"size": size})
    mapping = mapping_for(backbone)
    g = torch.Generator().manual_seed(3)
    small = torch.randint(0, 256, (4, 56, 56, 3), dtype=torch.uint8, generator=g)
    large = torch.randint(0, 256, (4, 112, 56, 3), dtype=torch.uint8, generator=g)
    tokens = mapping.conditioning_tokens(backbone, [small, large])
    assert tokens[0].shape[0] < tokens[1].shape[0]
    torch.manual_seed(0)
    gen = ParameterGenerator.for_backbone(backbone, rank=2, d_seg=32, width=16, heads=2)
    _randomise_b_head(gen)
    with torch.no_grad():
        both = gen(tokens)
        for i, clip in enumerate((small, large)):
            alone = gen(mapping.conditioning_tokens(backbone, [clip]))
            for t in alone.targets:
                torch.testing.assert_close(both.B[t][i], alone.B[t][0], atol=1e-6, rtol=1e-5)
