"""Memory-bounded GRPO on the tiny Qwen2-VL: the micro-batched step (each micro-batch's backward inside its
adaptation, COPRA's generated LoRA differentiated once) has the unbatched step's gradient, chunked rollouts and
old / reference forwards agree with one forward, and the loss phase's saved activations stay bounded by the
micro-batch whatever B x G is."""

from __future__ import annotations

import dataclasses
import weakref

import pytest
import torch
from copra_bench.baselines import StaticLoRAGRPO

from copra_bench.copra import COPRA
from copra_bench.rl import GRPOConfig, GRPOConfigError, GRPOEngine

COPRA_TINY = {"rank": 2, "alpha": 4.0, "generator_depth": 1, "generator_width": 32, "generator_heads": 2,
              "segment_size": 16}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(inputs: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (inputs, 4, 48, 64, 3), generator=g, dtype=torch.uint8)
    return {"frames": frames, "label": torch.arange(inputs) % 2}


def _copra(mode: str, **grpo) -> COPRA:
    torch.manual_seed(0)
    method = COPRA(**{**COPRA_TINY, "rollout_mode": mode, "num_generations": 4, "max_completion_length": 6,
                      "beta": 0.1, **grpo})
    with torch.no_grad():  # B's head starts at 0 (the frozen model): move it so every gradient path is exercised
        method.model.generator.head_b[-1].weight.normal_(0, 0.05)
    return method


def _static(mode: str, **grpo) -> StaticLoRAGRPO:
    torch.manual_seed(0)
    method = StaticLoRAGRPO(rank=2, alpha=4.0, rollout_mode=mode, num_generations=4, max_completion_length=6,
                            beta=0.1, **grpo)
    with torch.no_grad():
        for p in method.adapter.lora_parameters():
            p.normal_(0, 0.05)
    return method


def _adaptation(method, tokens):
    """The loss adaptation of a training step, rebuilt for every call (COPRA: the generator runs again)."""
    if isinstance(method, COPRA):
        return method.model.adaptation(method.model.generator(tokens))
    return method.adapter.adaptation


def _grads(method) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in method.trainable_parameters()]


def _engine(method, **changes) -> GRPOEngine:
    engine = method.engine
    return GRPOEngine(engine.policy, dataclasses.replace(engine.config, **changes), engine.reward_names)


@pytest.mark.parametrize("mode", ["format", "constrained"])
@pytest.mark.parametrize("kind", ["copra", "static"])
def test_micro_batched_step_has_the_unbatched_gradient(kind, mode):
    method = (_copra if kind == "copra" else _static)(mode, num_iterations=2)
    batch = _batch()
    tokens = method.model.condition_tokens(batch["frames"]) if kind == "copra" else None
    rollout_adaptation = _adaptation(method, tokens)
    torch.manual_seed(1)
    with torch.no_grad():
        experience = method.engine.make_experience(batch, rollout_adaptation)
    method.zero_grad(set_to_none=True)
    loss, stats = method.engine.loss(batch, experience, _adaptation(method, tokens))
    loss.backward()
    reference = _grads(method)
    assert any(float(g.abs().max()) > 0 for g in reference)
    for micro in (1, 2, 4, 8):  # N = 12 rows, G = 4: parts of a group, one group, two groups + a remainder
        engine = _engine(method, loss_micro_batch=micro)
        torch.testing.assert_close(engine._logprobs_no_grad(batch, experience.rollouts, None), experience.ref_logp,
                                   rtol=1e-5, atol=1e-6)
        method.zero_grad(set_to_none=True)
        micro_loss, micro_stats = engine.backward(batch, experience, _adaptation(method, tokens))
        for got, want in zip(_grads(method), reference, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7, msg=f"loss_micro_batch={micro}")
        assert abs(float(micro_loss) - float(loss.detach())) < 1e-6
        assert abs(micro_stats["kl"] - stats["kl"]) < 1e-6


@pytest.mark.parametrize(("loss_type", "backbone"), [("bnpo", "tiny-qwen2-vl"), ("dr_grpo", "tiny-qwen2-vl"),
                                                     ("grpo", "tiny-internvl"), ("grpo", "tiny-qwen3-vl")])
def test_every_loss_type_and_family_splits_exactly(loss_type, backbone):
    # InternVL and Qwen3-VL re-encode each row's pixels: the micro-batches slice per-frame tiles / patches
    method = _copra("format", loss_type=loss_type, backbone=backbone)
    batch = _batch()
    tokens = method.model.condition_tokens(batch["frames"])
    torch.manual_seed(2)
    experience = method.engine.make_experience(batch, method.model.adaptation(method.model.generator(tokens).detach()))
    method.zero_grad(set_to_none=True)
    method.engine.loss(batch, experience, _adaptation(method, tokens))[0].backward()
    reference = _grads(method)
    method.zero_grad(set_to_none=True)
    _engine(method, loss_micro_batch=2).backward(batch, experience, _adaptation(method, tokens))
    for got, want in zip(_grads(method), reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_chunked_rollouts_keep_their_rows_and_inputs():
    method = _copra("constrained")
    batch = _batch(4)
    adaptation = method.model.adaptation(method.model.generator(method.model.condition_tokens(batch["frames"])))
    torch.manual_seed(3)
    whole = method.engine.make_experience(batch, adaptation)
    torch.manual_seed(3)
    chunked = _engine(method, rollout_batch_size=4).make_experience(batch, adaptation)
    # constrained rollouts: one label forward per chunk of inputs, then the same draws
    assert torch.equal(whole.rollouts.completion_ids, chunked.rollouts.completion_ids)
    method = _copra("format")
    seen: list[int] = []
    handle = method.backbone.language_model.layers[0].register_forward_hook(lambda m, i, o: seen.append(len(i[0])))
    try:
        experience = _engine(method, rollout_batch_size=2, beta=0.0).make_experience(batch, method.model.adaptation(
            method.model.generator(method.model.condition_tokens(batch["frames"])).detach()))
    finally:
        handle.remove()
    assert experience.rollouts.num_rows == 16 and experience.rollouts.mask.shape[0] == 16
    assert max(seen) == 2  # never more than rollout_batch_size rows per generate step
    assert experience.rollouts.completion_ids.shape == experience.rollouts.mask.shape


def test_a_micro_batch_that_splits_groups_unevenly_is_refused():
    with pytest.raises(GRPOConfigError, match=r"loss_micro_batch=3 does not divide .* num_generations=4.*1, 2, 4"):
        GRPOConfig(num_generations=4, loss_micro_batch=3)
    with pytest.raises(GRPOConfigError, match="rollout_batch_size=6"):
        COPRA(**COPRA_TINY, num_generations=4, rollout_batch_size=6)
    GRPOConfig(num_generations=4, loss_micro_batch=8, rollout_batch_size=2)


class _SavedBytes:
    """Bytes of the tensors autograd currently keeps for backward (packed by saved_tensors_hooks, released with
    their graph), and the peak of that sum."""

    def __init__(self) -> None:
        self.live = self.peak = 0

    def pack(self, tensor: torch.Tensor):
        holder = _Holder(tensor)
        size = tensor.numel() * tensor.element_size()
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(holder, self._release, size)
        return holder

    def _release(self, size: int) -> None:
        self.live -= size

    @staticmethod
    def unpack(holder) -> torch.Tensor:
        return holder.tensor


class _Holder:
    __slots__ = ("__weakref__", "tensor")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


def _loss_phase_peak(method, inputs: int, micro: int | None) -> int:
    batch = _batch(inputs)
    tokens = method.model.condition_tokens(batch["frames"])
    torch.manual_seed(4)
    experience = method.engine.make_experience(batch, method.model.adaptation(method.model.generator(tokens).detach()))
    counter = _SavedBytes()
    engine = _engine(method, loss_micro_batch=micro, beta=0.0)
    method.zero_grad(set_to_none=True)
    adaptation = _adaptation(method, tokens)  # the generator's activations (once per step, B inputs) not counted
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        engine.backward(batch, experience, adaptation)
    return counter.peak


def test_loss_phase_memory_does_not_grow_with_the_rows_at_a_fixed_micro_batch():
    method = _copra("format")
    small, large = _loss_phase_peak(method, 2, 2), _loss_phase_peak(method, 6, 2)
    assert large < 1.1 * small, (small, large)
    unbatched_small, unbatched_large = _loss_phase_peak(method, 2, None), _loss_phase_peak(method, 6, None)
    assert unbatched_large > 2.0 * unbatched_small  # what the micro-batches remove: the measure can fail
    assert large < unbatched_large / 2


def test_out_of_memory_names_the_step_rows_tokens_and_the_keys(tmp_path, monkeypatch, capsys, synth_cache):
    import yaml

    from copra_bench.cli import main

    from .test_cli import MAIN, _small_data_config

    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model.yaml"
    model.write_text(yaml.safe_dump({"class_path": "copra_bench.copra.COPRA", "init_args": {
        **COPRA_TINY, "rollout_mode": "constrained", "num_generations": 4, "loss_micro_batch": 2}}))
    trainer = tmp_path / "trainer.yaml"
    trainer.write_text(yaml.safe_dump({
        "max_steps": 4, "num_sanity_val_steps": 0, "limit_val_batches": 0, "enable_progress_bar": False,
        "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                       "init_args": {"save_last": True, "every_n_train_steps": 1, "save_top_k": 0}}]}))
    calls: list[int] = []
    original = GRPOEngine.backward

    def runs_out_at_the_third_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GRPOEngine, "backward", runs_out_at_the_third_step)
    code = main(["fit", "--config", MAIN, "--data", _small_data_config(tmp_path, synth_cache), "--model", str(model),
                 "--trainer", str(trainer), "--data.init_args.batch_size", "1", "--test_after_fit", "false"])
    err = capsys.readouterr().err
    assert code == 2
    assert "out of GPU memory at global step 2 in the loss phase: 1 inputs x G=4 = 4 rows of " in err
    assert "1 completion tokens; loss_micro_batch=2" in err
    assert "model.init_args.loss_micro_batch (e.g. 1), model.init_args.lm_checkpointing: true" in err
    (last,) = tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=False)["global_step"] == 2  # the step before, whole
