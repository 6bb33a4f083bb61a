"""Backbone mappings (COPRA's view of the family registry): each supported family's tiny model of the real
transformers class, layouts, errors. The family contract itself is ``tests/test_families.py``."""

from __future__ import annotations

import pytest
import torch

from copra_bench.copra.layout import LayoutError, LoRALayout
from copra_bench.copra.mappings import MappingError, mapping_for
from copra_bench.vlm.backbone import VLMBackbone
from copra_bench.vlm.families import VLMFamily, family_of, registry

FAMILIES = {"tiny-qwen2-vl": "qwen2_vl", "tiny-qwen2.5-vl": "qwen2_5_vl", "tiny-qwen3-vl": "qwen3_vl",
            "tiny-internvl": "internvl"}


@pytest.fixture(scope="module", params=list(FAMILIES))
def backbone(request):
    return VLMBackbone.load(request.param)


def _expected_shapes(config) -> dict[str, tuple[int, int]]:
    """(in, out) of each target from the text config alone (independent of the modules)."""
    t = config.get_text_config()
    head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    h, q, kv, m = t.hidden_size, t.num_attention_heads * head_dim, t.num_key_value_heads * head_dim, t.intermediate_size
    return {"q": (h, q), "k": (h, kv), "v": (h, kv), "o": (q, h), "gate": (h, m), "up": (h, m), "down": (m, h)}


def test_family_mapping_finds_layers_targets_and_vision_tokens(backbone):
    mapping = mapping_for(backbone)
    assert mapping.family == FAMILIES[backbone.name] == backbone.model.config.model_type
    cfg = backbone.model.config
    layers = mapping.decoder_layers(backbone)
    assert len(layers) == cfg.get_text_config().num_hidden_layers
    assert mapping.language_model_of(backbone) is backbone.language_model
    assert mapping.target_shapes(backbone) == _expected_shapes(cfg)
    # every target is the real Linear object of that layer
    assert mapping.target_module(layers[1], "up") is layers[1].mlp.up_proj
    assert mapping.target_module(layers[0], "k") is layers[0].self_attn.k_proj
    # conditioning tokens: the vision encoder's tokens of the K frames, of the declared size
    videos = torch.randint(0, 255, (2, 4, 56, 56, 3), dtype=torch.uint8)
    tokens = mapping.conditioning_tokens(backbone, videos)
    assert len(tokens) == 2 and all(t.dim() == 2 and t.shape[0] > 0 for t in tokens)
    assert {t.shape[1] for t in tokens} == {mapping.vision_dim(backbone)}
    # the same lookup works from the raw transformers model
    assert mapping_for(backbone.model) is mapping


def test_layout_options(backbone):
    mapping = mapping_for(backbone)
    lay = mapping.layout(backbone, rank=4, targets=["down", "q", "v"], layers=[-1], d_seg=16)
    assert lay.layers == (1,) and lay.targets == ("q", "v", "down")
    assert lay.groups == (("q", "v"),)  # q and v still share their input; gate/up absent
    shapes = _expected_shapes(backbone.model.config)
    assert lay.num_lora_values == 4 * sum(shapes[t][0] + shapes[t][1] for t in ("q", "v", "down"))
    full = mapping.layout(backbone)
    assert full.layers == (0, 1) and full.rank == 8 and full.groups == (("q", "k", "v"), ("gate", "up"))


def test_layout_errors():
    backbone = VLMBackbone.load("tiny-qwen2-vl")
    mapping = mapping_for(backbone)
    with pytest.raises(LayoutError, match="unknown LoRA targets"):
        mapping.layout(backbone, targets=["q", "qkv"])
    with pytest.raises(LayoutError, match="out of range"):
        mapping.layout(backbone, layers=[0, 5])
    with pytest.raises(LayoutError, match="rank"):
        mapping.layout(backbone, rank=0)


def test_unsupported_family_lists_supported_and_how_to_add():
    with pytest.raises(MappingError) as err:
        mapping_for("llava")
    msg = str(err.value)
    for family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "internvl"):
        assert family in msg
    assert "copra_bench/vlm/families/" in msg and "'llava'" in msg


def test_a_registered_family_is_mapped(monkeypatch):
    custom = VLMFamily(model_type="my_vl", name="My VL", example="me/my-vl", vision_encoder=("visual",),
                       vision_tokens=("visual",), vision_dim_of=lambda c: 7, positions=None)
    monkeypatch.setitem(registry._REGISTRY, "my_vl", custom)
    mapping = mapping_for("my_vl")
    assert mapping.spec is family_of("my_vl") is custom and mapping_for("my_vl") is mapping
    assert mapping.family == "my_vl" and mapping.human == "My VL (e.g. me/my-vl)"
    assert mapping.targets["down"] == "mlp.down_proj"


def test_the_mapping_is_a_view_of_the_registered_family(backbone):
    mapping, family = mapping_for(backbone), backbone.family_spec
    assert mapping.spec is family
    assert (mapping.targets, mapping.shared_inputs) == (family.targets, family.shared_inputs)
    assert mapping.vision_dim(backbone) == family.vision_dim(backbone.model.config)
    assert mapping.decoder_layers(backbone) is family.decoder_layers_of(backbone.model)


def test_a_missing_module_is_a_mapping_error():
    backbone = VLMBackbone.load("tiny-qwen2-vl")
    with pytest.raises(MappingError, match="copra_bench/vlm/families/qwen2_vl.py"):
        mapping_for(backbone).language_model_of(torch.nn.Linear(2, 2))


def test_paper_size_layout_token_counts():
    """Qwen2-VL-7B dims (hidden 3584, intermediate 18944, kv dim 512, 28 layers), rank 8: counts by hand."""
    h, m, kv = 3584, 18944, 512
    shapes = {"q": (h, h), "k": (h, kv), "v": (h, kv), "o": (h, h), "gate": (h, m), "up": (h, m), "down": (m, h)}
    lay = LoRALayout(layers=tuple(range(28)), targets=tuple(shapes), shapes=shapes, rank=8, d_seg=256)
    a_tokens = 6 * 14 + 74  # in = 3584 -> 14 segments (6 targets), 18944 -> 74 (down)
    b_tokens = 14 + 2 + 2 + 14 + 74 + 74 + 14
    assert lay.num_a_tokens == a_tokens and lay.tokens_per_layer == a_tokens + b_tokens == 352
    assert lay.num_tokens == 28 * 352
    assert lay.num_lora_values == 28 * 8 * (6 * h + m + h + kv + kv + h + m + m + h)
