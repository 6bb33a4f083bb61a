"""The VLM family registry and the contract every registered family passes on its built-in tiny random model.

Adding a family is one module in ``copra_bench/vlm/families/`` plus a subclass of :class:`FamilyContract` here
naming its ``model_type``; :func:`test_every_registered_family_runs_the_contract` fails until that subclass exists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

from copra_bench.vlm import BUILTIN_MODELS, SUPPORTED_FAMILIES, BackboneError, VLMBackbone
from copra_bench.vlm.families import (
    ALL_TARGETS,
    VLMFamily,
    family_of,
    register_family,
    registered_families,
    registry,
)
from copra_bench.vlm.sequences import completion_logprobs, expand_inputs, shared_vision_outputs

FAMILIES_DIR = Path(__file__).resolve().parents[1] / "copra_bench" / "vlm" / "families"


def _videos(batch: int = 2, frames: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, frames, size, size, 3), generator=g, dtype=torch.uint8)


@contextlib.contextmanager
def _bias_from_tokens(layer: nn.Linear, tokens: list[torch.Tensor]):
    """An adaptation conditioned on each input's vision tokens: their mean added to ``layer``'s output rows."""
    bias = torch.stack([t.mean(dim=0) for t in tokens]) * 0.5
    handle = layer.register_forward_hook(lambda _m, _i, out: out + bias[:, None, :].to(out.dtype))
    try:
        yield
    finally:
        handle.remove()


class FamilyContract:
    """What every registered family must satisfy. Subclasses set ``model_type``."""

    model_type: str

    @pytest.fixture(scope="class")
    @classmethod
    def family(cls) -> VLMFamily:
        return family_of(cls.model_type)

    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls, family) -> VLMBackbone:
        return VLMBackbone.load(family.tiny_model)

    # ------------------------------------------------------------------ identity
    def test_is_registered_with_its_tiny_model_and_module(self, family, backbone):
        assert family.model_type == self.model_type == backbone.model.config.model_type
        assert family.tiny_model in BUILTIN_MODELS and BUILTIN_MODELS[family.tiny_model] is family.build_tiny
        assert backbone.family == self.model_type and backbone.family_spec is family
        assert family_of(backbone) is family_of(backbone.model) is family
        assert SUPPORTED_FAMILIES[self.model_type] == family.human
        assert family.name in family.human and family.example in family.human
        # errors point at copra_bench/vlm/families/<model_type>.py: it must be the family's module
        assert (FAMILIES_DIR / f"{self.model_type}.py").is_file()

    # ------------------------------------------------------------------ module paths
    def test_paths_resolve_to_the_backbone_parts(self, family, backbone):
        model = backbone.model
        vision, language = family.vision_encoder_of(model), family.language_model_of(model)
        assert vision is backbone.vision_module and language is backbone.language_model
        tokens_module = family.vision_tokens_of(model)
        lm_modules = {id(m) for m in language.modules()}
        assert not any(id(m) in lm_modules for m in (vision, tokens_module)), "vision parts inside the LM"
        layers = family.decoder_layers_of(model)
        assert isinstance(layers, nn.ModuleList) and len(layers) == model.config.get_text_config().num_hidden_layers
        assert all(id(layer) in lm_modules for layer in layers)

    def test_targets_are_linear_with_consistent_shapes(self, family, backbone):
        assert set(family.targets) <= set(ALL_TARGETS) and family.targets
        layers = family.decoder_layers_of(backbone.model)
        for layer in layers:
            for target in family.targets:
                assert isinstance(family.target_module(layer, target), nn.Linear)
        shapes = family.target_shapes(backbone.model, tuple(family.targets))  # same in every layer, or it raises
        hidden = backbone.feature_dim
        assert all(shapes[t][0] == hidden for t in ("q", "k", "v", "gate", "up") if t in shapes)
        assert all(shapes[t][1] == hidden for t in ("o", "down") if t in shapes)
        for group in family.shared_inputs:
            assert len(group) > 1 and set(group) <= set(family.targets)
            assert len({shapes[t][0] for t in group}) == 1, group
        with pytest.raises(BackboneError, match="no target"):
            family.target_module(layers[0], "qkv")

    # ------------------------------------------------------------------ vision tokens
    def test_vision_dim_matches_the_vision_tokens(self, family, backbone):
        videos = _videos()
        tokens, pooled = backbone.vision_features(videos)
        dim = family.vision_dim(backbone.model.config)
        assert len(tokens) == 2 and all(t.dim() == 2 and t.shape[0] > 0 and t.shape[1] == dim for t in tokens)
        assert dim == backbone.feature_dim, "the vision tokens feed the LM: they have its hidden size"
        scored = backbone.score(videos, return_features=True)
        torch.testing.assert_close(scored.features, pooled, atol=1e-5, rtol=0)

    def test_reuse_flag_agrees_with_the_forward(self, family, backbone):
        videos = _videos(seed=1)
        inputs = backbone.prepare_inputs(videos, with_answer_prefix=True)
        if family.reuses_vision_outputs:
            assert "mm_encoder_outputs" in inspect.signature(backbone.model.forward).parameters
            assert callable(getattr(backbone.model, "get_video_features", None))
        assert backbone.reuses_vision_outputs(inputs) == family.reuses_vision_outputs
        # GRPO's log-prob forwards over repeated rows: the shared encoder outputs stand for the pixels exactly
        prompt, frames = backbone._prepare(videos, with_answer_prefix=False)
        expanded = expand_inputs(prompt, frames, 2)
        vision = shared_vision_outputs(backbone, prompt, 2)
        assert (vision is not None) == family.reuses_vision_outputs
        completion = torch.tensor(backbone.answer_token_ids).repeat(4, 1)
        mask = torch.ones(completion.shape)
        encoded = completion_logprobs(backbone, expanded, completion, mask)
        reused = completion_logprobs(backbone, expanded, completion, mask, vision_outputs=vision)
        torch.testing.assert_close(reused, encoded, atol=1e-5, rtol=0)
        # conditioned scoring (one encoder pass where reused) equals conditioning then scoring
        layer = family.target_module(family.decoder_layers_of(backbone.model)[0], "o")
        calls: list[int] = []
        handle = backbone.vision_module.register_forward_hook(lambda *_: calls.append(1))
        try:
            conditioned = backbone.score_conditioned(videos, lambda t: _bias_from_tokens(layer, t),
                                                     return_features=True)
        finally:
            handle.remove()
        assert len(calls) == (1 if family.reuses_vision_outputs else 2)
        tokens, pooled = backbone.vision_features(videos)
        with _bias_from_tokens(layer, tokens):
            reference = backbone.score(videos)
        assert not torch.allclose(reference.logit_margin, backbone.score(videos).logit_margin)
        torch.testing.assert_close(conditioned.logit_margin, reference.logit_margin, atol=1e-5, rtol=0)
        torch.testing.assert_close(conditioned.features, pooled, atol=1e-5, rtol=0)

    # ------------------------------------------------------------------ processor and positions
    def test_frame_counts_in_one_batch(self, family, backbone):
        clips = [_videos(1, frames=4)[0], _videos(1, frames=6, seed=2)[0]]
        if family.same_frames_per_batch:
            with pytest.raises(BackboneError, match="same number of frames"):
                backbone.score(clips)
            return
        both = backbone.score(clips)
        torch.testing.assert_close(both.logit_margin[1:], backbone.score(clips[1:]).logit_margin, atol=1e-5, rtol=0)

    def test_position_scheme_is_available(self, family, backbone):
        assert family.positions is not None and family.positions.description
        assert family.missing_position_support(backbone.model) is None
        if family.positions.requires is not None:
            assert callable(getattr(backbone.model.model, family.positions.requires))

    def test_unsupported_variants_say_what_to_use(self, family):
        for variant, hint in family.unsupported_variants.items():
            assert variant not in registered_families()
            with pytest.raises(BackboneError) as err:
                family_of(variant)
            assert hint in str(err.value)


class TestQwen2VL(FamilyContract):
    model_type = "qwen2_vl"


class TestQwen25VL(FamilyContract):
    model_type = "qwen2_5_vl"


class TestQwen3VL(FamilyContract):
    model_type = "qwen3_vl"


class TestInternVL(FamilyContract):
    model_type = "internvl"


# ---------------------------------------------------------------------------------------------------- registry
def test_every_registered_family_runs_the_contract():
    covered = {cls.model_type for cls in globals().values()
               if isinstance(cls, type) and issubclass(cls, FamilyContract) and cls is not FamilyContract}
    assert covered == set(registered_families()) == {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "internvl"}


def test_an_unknown_family_lists_the_supported_ones_and_where_to_add_one():
    with pytest.raises(BackboneError) as err:
        family_of("llava", where="/models/llava")
    msg = str(err.value)
    assert "'llava'" in msg and "/models/llava" in msg and "copra_bench/vlm/families/" in msg
    assert all(model_type in msg for model_type in registered_families())
    with pytest.raises(BackboneError):
        family_of(nn.Linear(2, 2))  # no config, no model_type


def test_register_family_adds_or_replaces(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    base = family_of("qwen2_vl")
    custom = register_family(dataclasses.replace(base, model_type="my_vl", name="My VL", example="me/my-vl"))
    assert family_of("my_vl") is custom and list(registered_families())[-1] == "my_vl"
    assert custom.human == "My VL (e.g. me/my-vl)"
    replaced = register_family(dataclasses.replace(custom, reuses_vision_outputs=False))
    assert family_of("my_vl") is replaced


def test_a_family_module_that_moved_names_the_family_file():
    family = family_of("internvl")
    with pytest.raises(BackboneError, match="copra_bench/vlm/families/internvl.py"):
        family.language_model_of(nn.Linear(2, 2))


def test_a_registered_family_pickles_as_itself():
    """``ddp_spawn`` pickles the model and with it the family record, whose callables are lambdas."""
    import pickle

    family = family_of("qwen2_vl")
    assert pickle.loads(pickle.dumps(family)) is family
