"""Prompt tuning: the video keeps its M-RoPE positions behind the soft prompt, the prompt changes the score and trains
with the true gradient, its initialisation and placeholder choice, config-time errors, and its export."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from copra_bench.baselines import PromptTuning
from copra_bench.baselines.prompt_tuning import PromptTuningError, SoftPrompt
from copra_bench.datamodules import SyntheticUCFCrimeDataModule

from copra_bench.vlm import VLMBackbone, family_of
from copra_bench.vlm.families import PositionScheme, registry

from .test_baselines import _clips
from .test_methods import _checksum, _trainer


# ------------------------------------------------------------------------------------------------ prompt tuning
def _positions_seen_by_the_language_model(backbone: VLMBackbone, clips, adapter=None) -> tuple:
    """The position ids the LM's rotary embedding receives (``[3, B, L]`` for M-RoPE, ``[B, L]`` for 1-D)."""
    seen: list = []
    rotary = backbone.language_model.rotary_emb
    handle = rotary.register_forward_pre_hook(lambda _m, args: seen.append(args[1]))
    try:
        if adapter is None:
            backbone.score(clips)
        else:
            adapter(clips)
    finally:
        handle.remove()
    (positions,) = seen
    return positions, backbone.prepare_inputs(clips, with_answer_prefix=True)["attention_mask"]


@pytest.mark.parametrize("name", ["tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-internvl"])
def test_soft_prompt_keeps_the_video_positions(name):
    """Positions with the soft prompt = positions without it shifted by n; the virtual tokens get 0..n-1."""
    backbone = VLMBackbone.load(name)
    n = 3
    # Different frame sizes give different numbers of vision tokens, so rows are left-padded differently.
    sizes = ((48, 64), (96, 112)) if backbone.family != "internvl" else ((64, 64), (64, 64))
    clips = _clips(*sizes)
    plain, mask = _positions_seen_by_the_language_model(backbone, clips)
    prompted, _ = _positions_seen_by_the_language_model(backbone, clips, SoftPrompt(backbone, num_virtual_tokens=n))
    # As [axes, B, L]: 1-D families pass [1 or B, L] (InternVL: one arange broadcast over the batch).
    plain, prompted = (p.unsqueeze(0) if p.dim() == 2 else p for p in (plain, prompted))
    plain, prompted = (p.expand(-1, len(clips), -1) for p in (plain, prompted))
    axes = plain.shape[0]
    assert prompted.shape[-1] == plain.shape[-1] + n
    if backbone.family != "internvl":
        assert mask[0].sum() != mask[1].sum(), "the test needs rows with different padding"
    for row in range(len(clips)):
        start = int(mask[row].long().argmax())
        real = plain[..., row, start:]
        virtual = prompted[..., row, start:start + n]
        after = prompted[..., row, start + n:]
        expected_virtual = torch.arange(n).expand(axes, n)
        assert torch.equal(virtual[-axes:], expected_virtual[-axes:]), virtual
        assert torch.equal(after[-axes:], real[-axes:] + n)
        if axes >= 3:  # M-RoPE: the video is not flat (height/width differ from temporal) in both cases
            assert not torch.equal(real[-3], real[-2]) and not torch.equal(after[-3], after[-2])


def test_soft_prompt_changes_the_score_and_trains(small_world):
    dm = SyntheticUCFCrimeDataModule(domain="A", **small_world)
    model = PromptTuning(num_virtual_tokens=4, lr=5e-2, frames_per_window=dm.frames_per_window)
    before = model.adapter.embeddings.detach().clone()
    frozen = _checksum(model.backbone)
    _trainer(max_steps=2, num_sanity_val_steps=0, limit_val_batches=0).fit(model, datamodule=dm)
    assert not torch.equal(before, model.adapter.embeddings), "the soft prompt was not updated"
    assert _checksum(model.backbone) == frozen


def test_soft_prompt_from_text_uses_its_token_embeddings():
    backbone = VLMBackbone.load("tiny-qwen2-vl")
    prompt = SoftPrompt(backbone, num_virtual_tokens=5, init_text="abnormal")
    ids = backbone.tokenizer.encode("abnormal", add_special_tokens=False)
    ids = (ids * 5)[:5]
    torch.testing.assert_close(prompt.embeddings.detach(), backbone.model.get_input_embeddings().weight[ids])


def _with_positions(monkeypatch, positions) -> None:
    """Register Qwen2-VL again with another position scheme (the backbone reads it when it is built)."""
    monkeypatch.setitem(registry._REGISTRY, "qwen2_vl",
                        dataclasses.replace(family_of("qwen2_vl"), positions=positions))


def test_prompt_tuning_on_a_family_without_a_position_scheme_fails_at_construction(monkeypatch):
    _with_positions(monkeypatch, None)
    with pytest.raises(PromptTuningError, match="does not know how the 'qwen2_vl' family computes token positions"):
        PromptTuning()


def test_prompt_tuning_without_the_rope_index_function_fails_at_construction(monkeypatch):
    _with_positions(monkeypatch, PositionScheme("M-RoPE", "no_such_rope_function"))
    with pytest.raises(PromptTuningError, match="no no_such_rope_function"):
        PromptTuning()


def test_prompt_tuning_rejects_zero_tokens():
    with pytest.raises(PromptTuningError, match="num_virtual_tokens must be >= 1"):
        PromptTuning(num_virtual_tokens=0)


def test_soft_prompt_gradient_matches_finite_differences():
    """The gradient reaching the soft prompt through the embedding hook is the true one (not merely non-zero)."""
    model = PromptTuning(num_virtual_tokens=3, backbone_dtype="float32", answer_loss="binary")
    frames = torch.stack(_clips((48, 64), (48, 64), seed=3))
    labels = torch.tensor([0, 1])

    def loss() -> torch.Tensor:
        with model.adapter.adaptation(1):
            logits = model.backbone.answer_logits(frames, grad=True)
        id0, id1 = model.backbone.answer_token_ids
        return torch.nn.functional.cross_entropy(torch.stack((logits[:, id0], logits[:, id1]), dim=-1), labels)

    model.adapter.embeddings.data = model.adapter.embeddings.data.double()
    model.backbone.model.double()
    value = loss()
    (grad,) = torch.autograd.grad(value, [model.adapter.embeddings])
    direction = torch.randn_like(grad, generator=torch.Generator().manual_seed(0))
    eps = 1e-3  # the model's RMSNorm computes in float32 even in a float64 model: a smaller step drowns in it
    with torch.no_grad():
        model.adapter.embeddings += eps * direction
        plus = loss()
        model.adapter.embeddings -= 2 * eps * direction
        minus = loss()
    numeric = (plus - minus) / (2 * eps)
    assert value.dtype == torch.float64
    assert abs(numeric - (grad * direction).sum()) < 1e-3 * abs(float(numeric))
    assert abs(float(numeric)) > 1e-8, "the soft prompt has no effect on the loss"


def test_trained_soft_prompt_is_exported(tmp_path):
    from safetensors.torch import load_file

    model = PromptTuning(num_virtual_tokens=3)
    path = model.export_trained(tmp_path / "trained")
    torch.testing.assert_close(load_file(str(path / "soft_prompt.safetensors"))["embeddings"],
                               model.adapter.embeddings.detach())
    assert '"num_virtual_tokens": 3' in (path / "soft_prompt.json").read_text()


def test_soft_prompt_without_spare_embedding_rows_uses_a_token_absent_from_the_prompt():
    backbone = VLMBackbone.load("tiny-qwen2-vl")
    clips = _clips((48, 64), (96, 112))
    spare = SoftPrompt(backbone, num_virtual_tokens=3)
    assert spare.placeholder_id == len(backbone.tokenizer)  # a row no text maps to
    with spare.adaptation():
        with_spare_row = backbone.score(clips).p_anomaly
    backbone.model.resize_token_embeddings(len(backbone.tokenizer))  # no row left beyond the tokenizer's
    prompt = SoftPrompt(backbone, num_virtual_tokens=3)
    prompt.embeddings.data.copy_(spare.embeddings.data)
    prompt_ids = set(backbone.prepare_inputs(clips, with_answer_prefix=True)["input_ids"].flatten().tolist())
    assert prompt.placeholder_id < len(backbone.tokenizer) and prompt.placeholder_id not in prompt_ids
    assert prompt.placeholder_id not in backbone.tokenizer.all_special_ids
    with prompt.adaptation():
        scores = backbone.score(clips).p_anomaly
    # the placeholder's own embedding row is never read: the same soft prompt gives the same scores
    torch.testing.assert_close(scores, with_spare_row, atol=1e-6, rtol=0)
