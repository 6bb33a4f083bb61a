"""VLMBackbone on the built-in tiny models: scoring, features, generation, prompts, freezing, loading offline."""

from __future__ import annotations

import json
import re

import pytest
import torch

from copra_bench.vlm import (
    ANSWER_PREFIX,
    BUILTIN_MODELS,
    FORMAT_REGEX,
    SUPPORTED_FAMILIES,
    SYSTEM_PROMPT,
    USER_PROMPT,
    BackboneError,
    ScoreOutput,
    VLMBackbone,
    format_reward,
    parse_answer,
)

TINY = "tiny-qwen2-vl"


def _videos(batch: int = 3, frames: int = 8, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, frames, size, size, 3), generator=g, dtype=torch.uint8)


@pytest.fixture(scope="module")
def backbone() -> VLMBackbone:
    return VLMBackbone.load(TINY, seed=0)


@pytest.fixture(scope="module")
def videos() -> torch.Tensor:
    return _videos()


# ---------------------------------------------------------------- scoring
def test_score_shape_range_and_sigmoid(backbone, videos):
    out = backbone.score(videos)
    assert isinstance(out, ScoreOutput)
    assert out.p_anomaly.shape == (3,) and out.logit_margin.shape == (3,)
    assert out.p_anomaly.dtype == torch.float32 and out.logit_margin.dtype == torch.float32
    assert out.features is None
    assert bool(((out.p_anomaly > 0) & (out.p_anomaly < 1)).all())
    torch.testing.assert_close(out.p_anomaly, torch.sigmoid(out.logit_margin), atol=1e-6, rtol=0)
    assert not out.p_anomaly.requires_grad


def test_score_deterministic_per_seed(backbone, videos):
    again = VLMBackbone.load(TINY, seed=0).score(videos)
    other = VLMBackbone.load(TINY, seed=1).score(videos)
    torch.testing.assert_close(backbone.score(videos).logit_margin, again.logit_margin, atol=0, rtol=0)
    assert (other.logit_margin - again.logit_margin).abs().max() > 1e-4


def test_load_leaves_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    VLMBackbone.load(TINY, seed=7)
    torch.testing.assert_close(torch.rand(3), expected, atol=0, rtol=0)


def test_batch_equals_per_sample_with_left_padding(backbone, videos):
    # Different frame counts -> different numbers of video tokens -> the shorter prompt is left-padded.
    clips = [videos[0], videos[1, :4], videos[2, :6]]
    inputs = backbone.prepare_inputs(clips, with_answer_prefix=True)
    mask = inputs["attention_mask"]
    assert (mask[:, -1] == 1).all(), "the answer position must be the last one for every input"
    assert mask[1, 0] == 0 and mask[0].all(), "padding must be on the left"
    batch = backbone.score(clips, return_features=True)
    for i, clip in enumerate(clips):
        single = backbone.score([clip], return_features=True)
        torch.testing.assert_close(batch.logit_margin[i : i + 1], single.logit_margin, atol=1e-5, rtol=0)
        torch.testing.assert_close(batch.p_anomaly[i : i + 1], single.p_anomaly, atol=1e-5, rtol=0)
        torch.testing.assert_close(batch.features[i : i + 1], single.features, atol=1e-5, rtol=0)


def test_features_match_vision_encoder_alone(backbone, videos):
    out = backbone.score(videos, return_features=True)
    hidden = backbone.model.config.text_config.hidden_size
    assert out.features.shape == (3, hidden) and out.features.dtype == torch.float32
    assert backbone.feature_dim == hidden
    tokens, pooled = backbone.vision_features(videos)
    assert len(tokens) == 3 and all(t.shape == (16, hidden) for t in tokens)  # 8 frames 64x64 -> 4x(2x2) tokens
    torch.testing.assert_close(out.features, pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled[1], tokens[1].mean(0), atol=1e-6, rtol=0)


def test_score_runs_the_vision_encoder_once(backbone, videos):
    calls = []
    handle = backbone.vision_module.register_forward_hook(lambda *_: calls.append(1))
    try:
        backbone.score(videos, return_features=True)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_score_matches_manual_computation(backbone, videos):
    out = backbone.score(videos)
    inputs = backbone.prepare_inputs(videos, with_answer_prefix=True)
    with torch.no_grad():
        logits = backbone.model(**inputs).logits  # all positions
    id0, id1 = backbone.answer_token_ids
    probs = torch.softmax(logits[:, -1, [id0, id1]].float(), dim=-1)
    torch.testing.assert_close(out.p_anomaly, probs[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logit_margin, (logits[:, -1, id1] - logits[:, -1, id0]).float(), atol=1e-5, rtol=0)


def test_answer_token_ids_are_single_tokens(backbone):
    id0, id1 = backbone.answer_token_ids
    tok = backbone.tokenizer
    assert tok.encode("0", add_special_tokens=False) == [id0]
    assert tok.encode("1", add_special_tokens=False) == [id1]
    assert id0 != id1


def test_score_with_grad_reaches_a_hook(backbone, videos):
    # Later LoRA generators add per-input deltas through forward hooks: score(grad=True) must carry gradients.
    delta = torch.zeros(backbone.model.config.text_config.hidden_size, requires_grad=True)
    layer = backbone.language_model.layers[0].self_attn.o_proj
    handle = layer.register_forward_hook(lambda _m, _i, out: out + delta)
    try:
        out = backbone.score(videos[:2], grad=True)
        out.logit_margin.sum().backward()
        no_grad = backbone.score(videos[:2])
    finally:
        handle.remove()
    assert delta.grad is not None and delta.grad.abs().sum() > 0
    assert not no_grad.logit_margin.requires_grad


def test_input_validation(backbone):
    with pytest.raises(BackboneError, match="uint8"):
        backbone.score(_videos(1).float())
    with pytest.raises(BackboneError, match=r"\[K, H, W, 3\]"):
        backbone.score([torch.zeros(8, 3, 64, 64, dtype=torch.uint8)])


# ---------------------------------------------------------------- generation
def test_generate_strings_and_num_return_sequences(backbone, videos):
    greedy = backbone.generate(videos[:2], max_new_tokens=4)
    assert isinstance(greedy, list) and len(greedy) == 2 and all(isinstance(t, str) for t in greedy)
    assert greedy == backbone.generate(videos[:2], max_new_tokens=4)
    sampled = backbone.generate(videos[:2], max_new_tokens=4, do_sample=True, num_return_sequences=3)
    assert len(sampled) == 6 and all(isinstance(t, str) for t in sampled)
    with pytest.raises(BackboneError):
        backbone.generate(videos[:2], max_new_tokens=2, num_return_sequences=2)


def test_sampling_reproducible_with_torch_seed(backbone, videos):
    torch.manual_seed(11)
    a = backbone.generate(videos[:1], max_new_tokens=6, do_sample=True, num_return_sequences=3)
    torch.manual_seed(11)
    b = backbone.generate(videos[:1], max_new_tokens=6, do_sample=True, num_return_sequences=3)
    assert a == b and len(set(a)) > 1


def test_sampling_overrides_near_greedy_checkpoint_config(backbone, videos):
    # Qwen2-VL-Instruct ships top_k=1 / top_p=0.001: explicit sampling settings must win, or GRPO groups collapse.
    gen = backbone.model.generation_config
    saved = (gen.top_k, gen.top_p)
    gen.top_k, gen.top_p = 1, 0.001
    try:
        torch.manual_seed(0)
        outs = backbone.generate(videos[:1], max_new_tokens=6, do_sample=True, temperature=1.0, num_return_sequences=4)
    finally:
        gen.top_k, gen.top_p = saved
    assert len(set(outs)) > 1


# ---------------------------------------------------------------- prompts
def test_prompt_contents(backbone):
    plain = backbone.build_prompt(with_answer_prefix=False)
    scored = backbone.build_prompt(with_answer_prefix=True)
    assert SYSTEM_PROMPT in plain and USER_PROMPT in plain
    assert "<|vision_start|><|video_pad|><|vision_end|>" in plain
    assert plain.endswith("<|im_start|>assistant\n")
    assert scored == plain + ANSWER_PREFIX and scored.endswith("<answer>")
    ids = backbone.prepare_inputs(_videos(1), with_answer_prefix=True)["input_ids"][0]
    assert int((ids == backbone.model.config.video_token_id).sum()) == 16


def test_custom_prompts():
    bb = VLMBackbone.load(TINY, system_prompt="SYS-X", user_prompt="USER-Y", answer_prefix="<answer> ")
    text = bb.build_prompt(with_answer_prefix=True)
    assert "SYS-X" in text and "USER-Y" in text and text.endswith("<answer> ")


@pytest.mark.parametrize(
    "text, label",
    [
        ("<think>people walk calmly.</think><answer>0</answer>", 0),
        ("<think>a man attacks a clerk.</think>\n<answer> 1 </answer>", 1),
        ("<answer>1</answer>", 1),
        ("<think>x</think><answer>yes</answer>", None),
        ("<think>x</think><answer>01</answer>", None),
        ("<think>x</think><answer>1", None),
        ("no tags at all: 1", None),
        ("", None),
    ],
)
def test_parse_answer(text, label):
    assert parse_answer(text) == label


@pytest.mark.parametrize(
    "text, ok",
    [
        ("<think>people walk calmly.</think><answer>0</answer>", True),
        ("<think>multi\nline</think>\n\n<answer>1</answer>", True),
        ("<think>x</think><answer>1</answer> trailing", False),
        ("<answer>1</answer>", False),
        ("<think>x</think>", False),
    ],
)
def test_format_regex(text, ok):
    assert (re.fullmatch(FORMAT_REGEX, text, re.DOTALL) is not None) is ok
    assert format_reward(text) == float(ok)


def test_format_reward_strip():
    assert format_reward("<think>x</think><answer>1</answer>\n") == 0.0
    assert format_reward("<think>x</think><answer>1</answer>\n", strip=True) == 1.0


# ---------------------------------------------------------------- frozen
def test_frozen_and_eval(backbone):
    assert all(not p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert backbone.training is True
    assert backbone.model.training is False
    assert all(not m.training for m in backbone.model.modules())
    backbone.eval()
    assert backbone.training is False
    container = torch.nn.ModuleDict({"vlm": backbone}).train()
    assert container.training and not backbone.model.training


def test_module_accessors(backbone):
    assert backbone.family == "qwen2_vl" and backbone.name == TINY
    assert backbone.vision_module is backbone.model.model.visual
    assert backbone.language_model is backbone.model.model.language_model
    assert backbone.tokenizer is backbone.processor.tokenizer
    assert set(SUPPORTED_FAMILIES) >= {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "internvl"}
    assert TINY in BUILTIN_MODELS


# ---------------------------------------------------------------- loading
def test_save_and_reload_offline(backbone, videos, tmp_path):
    path = backbone.save_pretrained(tmp_path / "ckpt")
    assert (path / "config.json").is_file()
    reloaded = VLMBackbone.load(str(path))
    assert reloaded.family == "qwen2_vl" and reloaded.name == str(path)
    before = backbone.score(videos, return_features=True)
    after = reloaded.score(videos, return_features=True)
    torch.testing.assert_close(after.logit_margin, before.logit_margin, atol=0, rtol=0)
    torch.testing.assert_close(after.features, before.features, atol=0, rtol=0)
    assert reloaded.build_prompt(with_answer_prefix=True) == backbone.build_prompt(with_answer_prefix=True)


def test_missing_path_error(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(BackboneError) as err:
        VLMBackbone.load(str(missing))
    msg = str(err.value)
    assert str(missing) in msg and "tiny-qwen2-vl" in msg and "never downloads" in msg


def test_unsupported_model_type_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(BackboneError) as err:
        VLMBackbone.load(str(tmp_path))
    msg = str(err.value)
    assert "'bert'" in msg and "copra_bench/vlm/families/" in msg
    for family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "internvl"):
        assert family in msg


def test_bad_dtype_error():
    with pytest.raises(BackboneError, match="dtype"):
        VLMBackbone.load(TINY, dtype="int8")


def test_bfloat16(videos):
    bb = VLMBackbone.load(TINY, dtype="bfloat16")
    assert bb.dtype == torch.bfloat16
    out = bb.score(videos[:2], return_features=True)
    assert out.p_anomaly.dtype == torch.float32 and out.features.dtype == torch.float32
    assert torch.isfinite(out.logit_margin).all()


@pytest.mark.parametrize("name", [n for n in BUILTIN_MODELS if n != TINY])
def test_other_builtin_families(name, tmp_path):
    bb = VLMBackbone.load(name, seed=0)
    clips = _videos(2)
    out = bb.score(clips, return_features=True)
    _, pooled = bb.vision_features(clips)
    torch.testing.assert_close(out.features, pooled, atol=1e-5, rtol=0)
    single = bb.score(clips[1:])
    torch.testing.assert_close(out.logit_margin[1:], single.logit_margin, atol=1e-5, rtol=0)
    assert len(bb.generate(clips, max_new_tokens=2, do_sample=True, num_return_sequences=2)) == 4
    reloaded = VLMBackbone.load(str(bb.save_pretrained(tmp_path / name)))
    assert reloaded.family == bb.family
    torch.testing.assert_close(reloaded.score(clips).logit_margin, out.logit_margin, atol=0, rtol=0)


def test_processing_device_route_gives_the_same_scores(backbone, videos):
    """On an accelerator the video processor runs on the model's device; the same code path on CPU must agree."""
    assert "device" in backbone._video_kwarg_names
    routed = VLMBackbone.load("tiny-qwen2-vl", video_kwargs={"device": "cpu"})
    torch.testing.assert_close(routed.score(videos).p_anomaly, backbone.score(videos).p_anomaly)


def test_multiple_resolutions_in_one_batch(backbone):
    clips = [_videos(1, size=64)[0], torch.randint(0, 255, (8, 48, 96, 3), dtype=torch.uint8)]
    both = backbone.score(clips, return_features=True)
    alone = backbone.score(clips[1:])
    assert both.features.shape[0] == 2
    torch.testing.assert_close(both.p_anomaly[1:], alone.p_anomaly, atol=1e-5, rtol=1e-5)
