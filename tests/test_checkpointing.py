"""LM gradient checkpointing per decoder layer (copra_bench/vlm/checkpointing.py): the same gradients with and
without it, through COPRA's injected per-input LoRA and through peft's static LoRA, with the backbone left in eval
mode; fewer saved activations; refused before loading on a family that cannot do it."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from copra_bench.baselines import StaticLoRAGRPO
from copra_bench.copra import COPRA
from copra_bench.rl import GRPOEngine, VLMPolicy
from copra_bench.vlm import BackboneError
from copra_bench.vlm.checkpointing import check_checkpointing
from copra_bench.vlm.families import family_of
from copra_bench.vlm.families.registry import _REGISTRY, register_family

from .test_grpo_microbatch import COPRA_TINY, _adaptation, _SavedBytes


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _method(kind: str, mode: str):
    torch.manual_seed(0)
    common = {"rollout_mode": mode, "num_generations": 4, "max_completion_length": 6, "beta": 0.1}
    if kind == "copra":
        method = COPRA(**COPRA_TINY, **common)
        with torch.no_grad():
            method.model.generator.head_b[-1].weight.normal_(0, 0.05)
        return method
    method = StaticLoRAGRPO(rank=2, alpha=4.0, **common)
    with torch.no_grad():
        for p in method.adapter.lora_parameters():
            p.normal_(0, 0.05)
    return method


def _step(method, batch, experience, tokens, *, checkpointing: bool, counter):
    policy = VLMPolicy(method.backbone, method.engine.policy.mode, checkpointing=checkpointing)
    engine = GRPOEngine(policy, dataclasses.replace(method.engine.config, loss_micro_batch=4),
                        method.engine.reward_names)
    method.zero_grad(set_to_none=True)
    adaptation = _adaptation(method, tokens)
    calls: list[int] = []
    mlp = method.backbone.language_model.layers[1].mlp  # called again when its layer is recomputed
    forward = mlp.forward
    mlp.forward = lambda *args, **kwargs: (calls.append(1), forward(*args, **kwargs))[1]
    try:
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
            engine.backward(batch, experience, adaptation)
    finally:
        del mlp.forward
    assert not method.backbone.model.training  # the frozen backbone keeps its inference behaviour
    grads = [p.grad.clone() for p in method.trainable_parameters() if p.grad is not None]
    return grads, len(calls)


@pytest.mark.parametrize(("kind", "mode"), [("copra", "format"), ("static", "format"), ("copra", "constrained")])
def test_checkpointing_gives_the_same_gradient_and_keeps_fewer_activations(kind, mode):
    method = _method(kind, mode)
    g = torch.Generator().manual_seed(0)
    batch = {"frames": torch.randint(0, 256, (2, 4, 48, 64, 3), generator=g, dtype=torch.uint8),
             "label": torch.tensor([0, 1])}
    tokens = method.model.condition_tokens(batch["frames"]) if kind == "copra" else None
    torch.manual_seed(1)
    with torch.no_grad():
        experience = method.engine.make_experience(batch, _adaptation(method, tokens))
    plain_bytes, checkpointed_bytes = _SavedBytes(), _SavedBytes()
    plain, plain_calls = _step(method, batch, experience, tokens, checkpointing=False, counter=plain_bytes)
    checkpointed, calls = _step(method, batch, experience, tokens, checkpointing=True, counter=checkpointed_bytes)
    assert plain and len(plain) == len(checkpointed)
    for got, want in zip(checkpointed, plain, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert calls == 2 * plain_calls  # every checkpointed layer ran again in backward, with the adaptation on
    assert checkpointed_bytes.peak < 0.8 * plain_bytes.peak, (checkpointed_bytes.peak, plain_bytes.peak)


def test_checkpointing_leaves_no_forward_behind():
    method = _method("static", "constrained")
    from copra_bench.vlm.checkpointing import lm_checkpointing

    layers = method.backbone.language_model.layers
    with lm_checkpointing(method.backbone):
        assert all("forward" in layer.__dict__ for layer in layers)
    assert not any("forward" in layer.__dict__ for layer in layers)


def test_a_family_that_cannot_checkpoint_is_refused_before_loading(tmp_path):
    family = dataclasses.replace(family_of("qwen2_vl"), model_type="fake_vl", name="FakeVL", lm_checkpointing=False,
                                 tiny_model=None, build_tiny=None)
    with pytest.raises(BackboneError, match=r"model.init_args.lm_checkpointing: true.*FakeVL.*set "
                                            r"model.init_args.lm_checkpointing: false"):
        check_checkpointing(family)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "fake_vl"}))  # no weights: loading would fail
    register_family(family)
    try:
        with pytest.raises(BackboneError, match="cannot checkpoint its LM decoder layers"):
            COPRA(backbone=str(tmp_path), lm_checkpointing=True)
    finally:
        _REGISTRY.pop("fake_vl")


@pytest.mark.parametrize("kind", ["lora_sft", "prompt_tuning"])
def test_supervised_micro_batches_and_checkpointing_keep_the_gradient(kind):
    from copra_bench.baselines import LoRASFT, PromptTuning

    torch.manual_seed(0)
    method = LoRASFT(rank=2, alpha=4.0) if kind == "lora_sft" else PromptTuning(num_virtual_tokens=4)
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    g = torch.Generator().manual_seed(0)
    batch = {"frames": torch.randint(0, 256, (4, 4, 48, 64, 3), generator=g, dtype=torch.uint8),
             "label": torch.tensor([0, 1, 1, 0])}

    def grads(micro, ckpt):
        method.micro_batch, method.lm_checkpointing = micro, ckpt
        method.zero_grad(set_to_none=True)
        stats = method.accumulate_gradients(batch, backward=torch.Tensor.backward)
        return [p.grad.clone() for p in method.trainable_parameters()], float(stats["loss"])

    reference, loss = grads(None, False)
    for micro, ckpt in ((1, False), (2, True), (None, True)):
        got, got_loss = grads(micro, ckpt)
        for a, b in zip(got, reference, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=f"micro_batch={micro}, checkpointing={ckpt}")
        assert abs(got_loss - loss) < 1e-6
