"""VLMPolicy on the built-in tiny Qwen2-VL in both rollout modes: shapes, log-probs against independent full
forwards, sampling consistency, row layout of adaptations, gradients through the adaptation only."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from copra_bench.rl import GRPOConfig, GRPOEngine, LinearBiasAdaptation, TrainingError, VLMPolicy
from copra_bench.vlm import BackboneError, VLMBackbone, parse_answer
from copra_bench.vlm.sequences import (
    completion_logprobs,
    completion_mask,
    expand_inputs,
    placeholder_token_ids,
    sample_completions,
    shared_vision_outputs,
)

TINY = "tiny-qwen2-vl"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backbone() -> VLMBackbone:
    return VLMBackbone.load(TINY, seed=0)


@pytest.fixture(scope="module")
def clips() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    videos = torch.randint(0, 256, (2, 8, 64, 64, 3), generator=g, dtype=torch.uint8)
    return [videos[0], videos[1, :4]]  # different lengths: the second prompt is left-padded


def _batch(clips, labels=(0, 1)) -> dict:
    return {"frames": clips, "label": torch.tensor(labels)}


def _adaptation(backbone, num_inputs=2, std=0.5, seed=0) -> LinearBiasAdaptation:
    torch.manual_seed(seed)
    return LinearBiasAdaptation(backbone.language_model.layers[0].mlp.down_proj, num_inputs=num_inputs, init_std=std)


def _reference_logprobs(backbone, clip, completion: torch.Tensor) -> torch.Tensor:
    """Log-probs of ``completion`` after one unpadded prompt, from a plain full forward (all logits)."""
    inputs = backbone.prepare_inputs([clip], with_answer_prefix=False)
    prompt_len = inputs["input_ids"].shape[1]
    ids = torch.cat([inputs["input_ids"], completion.view(1, -1)], dim=1)
    types = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(completion).view(1, -1)], dim=1)
    model_inputs = dict(inputs, input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=types)
    logits = backbone.model(**model_inputs, use_cache=False).logits[0].float()
    logits[:, placeholder_token_ids(backbone)] = float("-inf")  # never sampled: outside the policy's support
    logp = torch.log_softmax(logits, dim=-1)[prompt_len - 1 : prompt_len - 1 + completion.numel()]
    return logp.gather(1, completion.view(-1, 1)).flatten()


# ---------------------------------------------------------------- inputs
@pytest.mark.parametrize("name", [TINY, "tiny-internvl"])
def test_expand_inputs_equals_processing_repeated_videos(name, backbone, clips):
    bb = backbone if name == TINY else VLMBackbone.load(name, seed=0)
    videos = clips if name == TINY else [clips[0][:4], clips[1]]  # InternVL needs equal frame counts
    inputs, frames = bb._prepare(videos, with_answer_prefix=False)
    expanded = expand_inputs(inputs, frames, 3)
    reference = bb.prepare_inputs([v for v in videos for _ in range(3)], with_answer_prefix=False)
    assert set(expanded) == set(reference)
    for key, value in reference.items():
        torch.testing.assert_close(expanded[key], value, atol=0, rtol=0, msg=key)


def test_placeholder_tokens(backbone):
    cfg = backbone.model.config
    assert {cfg.video_token_id, cfg.image_token_id, cfg.vision_start_token_id} <= set(placeholder_token_ids(backbone))
    assert backbone.tokenizer.eos_token_id not in placeholder_token_ids(backbone)


def test_completion_mask_stops_after_the_first_eos():
    ids = torch.tensor([[5, 9, 7, 9, 3], [1, 2, 3, 4, 5], [9, 0, 0, 0, 0]])
    expected = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float32)
    assert torch.equal(completion_mask(ids, [9, 8]), expected)


# ---------------------------------------------------------------- format mode
def test_format_logprobs_equal_unpadded_full_forwards(backbone, clips):
    inputs, frames = backbone._prepare(clips, with_answer_prefix=False)
    expanded = expand_inputs(inputs, frames, 2)
    eos = backbone.eos_token_ids[0]
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 256, (4, 6), generator=g)
    ids[1, 2] = eos  # row 1 ends early; pads after it
    ids[1, 3:] = backbone.tokenizer.pad_token_id
    mask = completion_mask(ids, [eos])
    vision = shared_vision_outputs(backbone, inputs, 2)
    assert vision is not None and len(vision["video"].pooler_output) == 4
    with torch.no_grad():
        got = completion_logprobs(backbone, expanded, ids, mask)
        got_shared = completion_logprobs(backbone, expanded, ids, mask, vision_outputs=vision)
        for row in range(4):
            length = int(mask[row].sum())
            ref = _reference_logprobs(backbone, clips[row // 2], ids[row, :length])
            torch.testing.assert_close(got[row, :length], ref, atol=2e-5, rtol=1e-5)
            torch.testing.assert_close(got_shared[row, :length], ref, atol=2e-5, rtol=1e-5)


def test_sampled_tokens_logprobs_equal_generation_scores(backbone, clips):
    adapt = _adaptation(backbone)
    inputs, frames = backbone._prepare(clips, with_answer_prefix=False)
    expanded = expand_inputs(inputs, frames, 3)
    torch.manual_seed(0)
    with torch.no_grad(), adapt(3):
        ids, mask, logits = sample_completions(backbone, expanded, max_new_tokens=8, return_logits=True)
        recomputed = completion_logprobs(backbone, expanded, ids, mask)
    assert set(adapt.calls) == {6}, "every forward of generate must see B * G rows"
    suppressed = placeholder_token_ids(backbone)
    assert not torch.isin(ids, torch.tensor(suppressed)).any()
    logits = logits.float()
    logits[..., suppressed] = float("-inf")
    from_generate = torch.log_softmax(logits, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(recomputed * mask, from_generate * mask, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        frozen = completion_logprobs(backbone, expanded, ids, mask)
    assert (frozen - recomputed).abs().max() > 1e-3, "the adaptation must change the log-probs"


def test_format_rollouts_shapes_and_texts(backbone, clips):
    policy = VLMPolicy(backbone)
    assert policy.mode == "format" and policy.default_rewards == ("accuracy", "format")
    cfg = GRPOConfig(num_generations=3, max_completion_length=5)
    torch.manual_seed(0)
    ro = policy.rollout(_batch(clips), num_generations=3, adaptation=None, config=cfg)
    assert ro.completion_ids.shape[0] == 6 and ro.completion_ids.shape[1] <= 5
    assert ro.mask.shape == ro.completion_ids.shape
    assert ro.labels.tolist() == [0, 0, 0, 1, 1, 1] and len(ro.texts) == 6 and ro.max_length == 5
    decoded = backbone.tokenizer.batch_decode(ro.completion_ids, skip_special_tokens=True)
    assert ro.texts == decoded
    calls = []
    handle = backbone.vision_module.register_forward_hook(lambda *_: calls.append(1))
    try:
        logp = policy.completion_logprobs(_batch(clips), ro, adaptation=None)
        assert calls == [], "the shared vision tokens must replace the vision encoder in log-prob forwards"
        bare = dataclasses.replace(ro, extras={})  # nothing cached: inputs rebuilt from the batch
        no_reuse = VLMPolicy(backbone, reuse_vision=False).completion_logprobs(_batch(clips), bare, adaptation=None)
        assert calls == [1]
    finally:
        handle.remove()
    assert logp.shape == ro.completion_ids.shape and logp.dtype == torch.float32 and not logp.requires_grad
    torch.testing.assert_close(logp * ro.mask, no_reuse * ro.mask, atol=2e-5, rtol=1e-5)


# ---------------------------------------------------------------- constrained mode
def test_constrained_rollouts_and_logprobs_match_score(backbone, clips):
    policy = VLMPolicy(backbone, mode="constrained")
    assert policy.default_rewards == ("accuracy",)
    adapt = _adaptation(backbone)
    cfg = GRPOConfig(num_generations=4)
    torch.manual_seed(0)
    ro = policy.rollout(_batch(clips), num_generations=4, adaptation=adapt, config=cfg)
    assert ro.completion_ids.shape == (8, 1) and ro.mask.shape == (8, 1) and ro.max_length == 1
    assert adapt.calls == [2], "constrained rollouts are one forward of the B prompts"
    id0, id1 = backbone.answer_token_ids
    choices = [parse_answer(t) for t in ro.texts]
    assert ro.completion_ids[:, 0].tolist() == [id1 if c else id0 for c in choices]
    logp = policy.completion_logprobs(_batch(clips), ro, adaptation=adapt)
    assert logp.shape == (8, 1) and adapt.calls == [2, 2]
    with adapt(1):
        p = backbone.score(clips).p_anomaly.double()
    expected = torch.tensor([
        torch.log(p[n // 4] if choices[n] else 1 - p[n // 4]).item() for n in range(8)
    ])
    torch.testing.assert_close(logp[:, 0].double(), expected.double(), atol=1e-5, rtol=1e-5)


def test_constrained_sampling_follows_the_label_distribution(backbone, clips):
    adapt = LinearBiasAdaptation(backbone.model.lm_head)
    with torch.no_grad():
        adapt.bias[0, backbone.answer_token_ids[1]] = 2.0  # P("1") well above 1/2
    with adapt(1):
        p = backbone.score(clips).p_anomaly
    torch.manual_seed(0)
    ro = VLMPolicy(backbone, "constrained").rollout(
        _batch(clips), num_generations=400, adaptation=adapt, config=GRPOConfig(num_generations=400)
    )
    freq = torch.tensor([parse_answer(t) for t in ro.texts], dtype=torch.float32).view(2, 400).mean(dim=1)
    torch.testing.assert_close(freq, p, atol=0.08, rtol=0)  # 400 draws: std <= 0.025


# ---------------------------------------------------------------- gradients and training
@pytest.mark.parametrize("mode", ["format", "constrained"])
def test_gradient_reaches_the_adaptation_only(backbone, clips, mode):
    adapt = _adaptation(backbone, std=0.0)
    engine = GRPOEngine(VLMPolicy(backbone, mode), GRPOConfig(num_generations=4, max_completion_length=4),
                        rewards=["accuracy"])
    before = [p.detach().clone() for p in backbone.parameters()]
    torch.manual_seed(1)
    exp = engine.make_experience(_batch(clips), adapt)
    exp.advantages = torch.tensor([1.0, -1.0, 0.5, -0.5] * 2)  # a signal whatever the random rewards were
    loss, stats = engine.loss(_batch(clips), exp, adapt)
    assert stats["kl"] == pytest.approx(0.0, abs=1e-6), "a zero adaptation is the reference policy"
    loss.backward()
    assert adapt.bias.grad is not None and adapt.bias.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())
    torch.optim.SGD(adapt.parameters(), lr=1.0).step()
    assert all(torch.equal(a, b) for a, b in zip(before, backbone.parameters()))


def test_constrained_training_raises_the_accuracy(backbone, clips):
    adapt = LinearBiasAdaptation(backbone.model.lm_head, num_inputs=2)
    engine = GRPOEngine(VLMPolicy(backbone, "constrained"), GRPOConfig(num_generations=8, beta=0.0))
    batch = _batch(clips, labels=(0, 1))
    opt = torch.optim.Adam(adapt.parameters(), lr=0.5)

    def p_correct() -> float:
        with adapt(1):
            p = backbone.score(clips).p_anomaly
        return float(((1 - p[0]) + p[1]) / 2)

    before = p_correct()
    torch.manual_seed(0)
    for _ in range(4):
        exp = engine.make_experience(batch, adapt)
        loss, _ = engine.loss(batch, exp, adapt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = p_correct()
    assert after > before + 0.2, (before, after)


@pytest.mark.parametrize("mode", ["format", "constrained"])
def test_diverged_adaptation_names_the_input(backbone, clips, mode):
    adapt = _adaptation(backbone, std=0.0)
    with torch.no_grad():
        adapt.bias[1, 0] = float("nan")
    engine = GRPOEngine(VLMPolicy(backbone, mode), GRPOConfig(num_generations=2, max_completion_length=3))
    with pytest.raises(TrainingError) as info:
        engine.make_experience(_batch(clips), adapt)
    assert info.value.inputs == [1] and info.value.rows == [2, 3]


def test_bad_mode_and_batch(backbone, clips):
    with pytest.raises(BackboneError, match="constrained"):
        VLMPolicy(backbone, mode="free")
    with pytest.raises(BackboneError, match="label"):
        VLMPolicy(backbone, "constrained").rollout({"frames": clips}, num_generations=2, adaptation=None,
                                                   config=GRPOConfig(num_generations=2))


@pytest.mark.parametrize("name", ["tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-internvl"])
def test_other_families_sample_and_score_consistently(name, clips):
    bb = VLMBackbone.load(name, seed=0)
    videos = [clips[0], clips[1][:4].repeat(2, 1, 1, 1)]  # equal frame counts (InternVL), different content
    inputs, frames = bb._prepare(videos, with_answer_prefix=False)
    expanded = expand_inputs(inputs, frames, 2)
    vision = shared_vision_outputs(bb, inputs, 2)
    assert (vision is not None) == (name == "tiny-qwen2.5-vl")  # Qwen3-VL (deepstack) and InternVL re-encode
    torch.manual_seed(0)
    with torch.no_grad():
        ids, mask, logits = sample_completions(bb, expanded, max_new_tokens=5, return_logits=True)
        logp = completion_logprobs(bb, expanded, ids, mask, vision_outputs=vision)
    logits = logits.float()
    logits[..., placeholder_token_ids(bb)] = float("-inf")
    expected = torch.log_softmax(logits, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logp * mask, expected * mask, atol=1e-4, rtol=1e-4)
