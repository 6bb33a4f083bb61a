"""Backbone mappings: where COPRA's LoRA goes in each VLM family and where its conditioning tokens come from.

A :class:`BackboneMapping` knows, for one transformers ``model_type``:

* the LM decoder layers (``language_model.layers``) and, in each, the Linear behind each short target name
  (``q`` -> ``self_attn.q_proj`` ... ``down`` -> ``mlp.down_proj``) with its ``(in, out)`` sizes;
* which targets read the same input tensor (``q, k, v`` and ``gate, up``), so the injector can fuse them;
* the conditioning tokens: the frozen vision encoder's tokens of the K frames after the merger / projector, as
  returned by :meth:`VLMBackbone.vision_features`, and their size ``vision_dim``.

Adding a family: ``register_mapping("my_model_type", BackboneMapping(...))`` (see the entries at the bottom).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from copra_bench.errors import CopraError

from .layout import ALL_TARGETS, LayoutError, LoRALayout

__all__ = [
    "BackboneMapping",
    "MappingError",
    "mapping_for",
    "register_mapping",
    "registered_mappings",
]


class MappingError(CopraError, ValueError):
    """A backbone has no COPRA mapping, or its modules do not look like the mapping says."""


_QWEN_TARGETS = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}


def _unwrap(backbone_or_model: Any) -> nn.Module:
    """The transformers ``*ForConditionalGeneration`` model of a ``VLMBackbone`` (or the model itself)."""
    model = getattr(backbone_or_model, "model", None)
    if hasattr(backbone_or_model, "vision_features") and isinstance(model, nn.Module):
        return model
    if isinstance(backbone_or_model, nn.Module):
        return backbone_or_model
    raise MappingError(f"expected a VLMBackbone or a transformers model, got {type(backbone_or_model)!r}")


@dataclass(frozen=True)
class BackboneMapping:
    """How COPRA reaches the parts of one VLM family.

    Attributes:
        family: transformers ``model_type`` (``config.model_type``).
        human: readable name shown in errors.
        language_model: candidate dotted paths (from the ConditionalGeneration model) of the LM decoder.
        layers: attribute path of the decoder-layer ``ModuleList`` inside the LM decoder.
        targets: short target name -> dotted path of its ``nn.Linear`` inside one decoder layer.
        shared_inputs: groups of targets whose Linear modules read the same input tensor.
        vision_dim: ``config -> D`` of the conditioning tokens (output of the merger / projector).
    """

    family: str
    human: str
    vision_dim_of: Callable[[Any], int]
    language_model: tuple[str, ...] = ("model.language_model", "language_model")
    layers: str = "layers"
    targets: dict[str, str] = field(default_factory=lambda: dict(_QWEN_TARGETS))
    shared_inputs: tuple[tuple[str, ...], ...] = (("q", "k", "v"), ("gate", "up"))

    # ------------------------------------------------------------------ modules
    def language_model_of(self, backbone_or_model: Any) -> nn.Module:
        model = _unwrap(backbone_or_model)
        for path in self.language_model:
            try:
                return model.get_submodule(path)
            except AttributeError:
                continue
        raise MappingError(
            f"cannot find the language model of this {self.family!r} model (tried {', '.join(self.language_model)}); "
            "update its BackboneMapping in copra_bench/copra/mappings.py for this transformers version"
        )

    def decoder_layers(self, backbone_or_model: Any) -> nn.ModuleList:
        """The LM decoder layers, in depth order."""
        lm = self.language_model_of(backbone_or_model)
        try:
            layers = lm.get_submodule(self.layers)
        except AttributeError as err:
            raise MappingError(f"{self.family!r}: the language model has no {self.layers!r} layer list") from err
        return layers  # type: ignore[return-value]

    def num_layers(self, backbone_or_model: Any) -> int:
        return len(self.decoder_layers(backbone_or_model))

    def target_module(self, layer: nn.Module, target: str) -> nn.Linear:
        """The ``nn.Linear`` of ``target`` inside one decoder layer."""
        if target not in self.targets:
            raise MappingError(f"{self.family!r} has no target {target!r}; choose from {', '.join(self.targets)}")
        module = layer.get_submodule(self.targets[target])
        if not isinstance(module, nn.Linear):
            raise MappingError(
                f"{self.family!r}: {self.targets[target]} is a {type(module).__name__}, not nn.Linear "
                "(a quantised or already-adapted model?); COPRA injects into plain frozen Linear layers"
            )
        return module

    def target_shapes(self, backbone_or_model: Any, targets: Sequence[str] = ALL_TARGETS) -> dict[str, tuple[int, int]]:
        """target -> ``(in_features, out_features)``, checked to be the same in every decoder layer."""
        layers = self.decoder_layers(backbone_or_model)
        shapes: dict[str, tuple[int, int]] = {}
        for t in targets:
            sizes = {(m.in_features, m.out_features) for m in (self.target_module(layer, t) for layer in layers)}
            if len(sizes) != 1:
                raise MappingError(f"{self.family!r}: target {t!r} has different sizes across layers: {sorted(sizes)}")
            shapes[t] = sizes.pop()
        return shapes

    # ------------------------------------------------------------------ conditioning tokens
    def vision_dim(self, backbone_or_model: Any) -> int:
        """``D`` of the conditioning tokens (:meth:`VLMBackbone.vision_features` rows)."""
        return int(self.vision_dim_of(_unwrap(backbone_or_model).config))

    def conditioning_tokens(self, backbone, videos, *, grad: bool = False) -> list[torch.Tensor]:
        """The frozen vision encoder's tokens of each input's K frames (``[T_i, vision_dim]`` float32)."""
        tokens, _ = backbone.vision_features(videos, grad=grad)
        return tokens

    # ------------------------------------------------------------------ layout
    def layout(
        self,
        backbone_or_model: Any,
        *,
        rank: int = 8,
        targets: Sequence[str] | str = ALL_TARGETS,
        layers: Sequence[int] | str = "all",
        d_seg: int = 512,
    ) -> LoRALayout:
        """The :class:`LoRALayout` of this backbone for the given rank, targets (names or ``"all"``) and layers
        (``"all"`` or indices; negative indices count from the top)."""
        targets = ALL_TARGETS if targets == "all" else tuple(targets)
        unknown = [t for t in targets if t not in self.targets]
        if unknown or not targets:
            raise LayoutError(f"unknown LoRA targets {unknown or '[]'}; choose from {', '.join(self.targets)}")
        targets = tuple(t for t in ALL_TARGETS if t in targets)  # canonical order, duplicates dropped
        n = self.num_layers(backbone_or_model)
        if layers == "all":
            chosen = list(range(n))
        else:
            if isinstance(layers, (str, int)):
                raise LayoutError(f"layers must be 'all' or a list of layer indices; got {layers!r}")
            bad = [i for i in layers if not -n <= int(i) < n]
            if bad:
                raise LayoutError(f"layer indices {bad} out of range for a {n}-layer language model")
            chosen = sorted({int(i) % n for i in layers})
        groups = tuple(g for g in (tuple(t for t in grp if t in targets) for grp in self.shared_inputs) if len(g) > 1)
        return LoRALayout(
            layers=tuple(chosen),
            targets=targets,
            shapes=self.target_shapes(backbone_or_model, targets),
            rank=int(rank),
            d_seg=int(d_seg),
            groups=groups,
        )


_REGISTRY: dict[str, BackboneMapping] = {}


def register_mapping(family: str, mapping: BackboneMapping) -> None:
    """Register (or replace) the mapping used for models whose ``config.model_type`` is ``family``."""
    _REGISTRY[family] = mapping


def registered_mappings() -> dict[str, BackboneMapping]:
    return dict(_REGISTRY)


def mapping_for(backbone_or_model: Any) -> BackboneMapping:
    """The mapping of a ``VLMBackbone``, a transformers model, or a ``model_type`` string."""
    if isinstance(backbone_or_model, str):
        family = backbone_or_model
    else:
        family = getattr(backbone_or_model, "family", None)
        if not isinstance(family, str):
            family = getattr(getattr(_unwrap(backbone_or_model), "config", None), "model_type", None)
    if family not in _REGISTRY:
        supported = "; ".join(f"{k} ({m.human})" for k, m in _REGISTRY.items())
        raise MappingError(
            f"COPRA has no backbone mapping for model_type {family!r}. Supported families: {supported}. "
            "To add one, call copra_bench.copra.mappings.register_mapping(model_type, BackboneMapping(...)) "
            "naming its LM decoder path, decoder-layer list, the q/k/v/o/gate/up/down Linear paths and the size of "
            "its vision tokens (see the entries at the end of copra_bench/copra/mappings.py); the backbone itself "
            "also needs an entry in copra_bench/vlm/backbone.py (_FAMILIES)."
        )
    return _REGISTRY[family]


def _text(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


# Qwen2-VL's vision_config.hidden_size is the merger output (= LM hidden); embed_dim is the ViT width.
register_mapping("qwen2_vl", BackboneMapping(
    "qwen2_vl", "Qwen2-VL (e.g. Qwen/Qwen2-VL-7B-Instruct)", vision_dim_of=lambda c: c.vision_config.hidden_size))
register_mapping("qwen2_5_vl", BackboneMapping(
    "qwen2_5_vl", "Qwen2.5-VL (e.g. Qwen/Qwen2.5-VL-7B-Instruct)",
    vision_dim_of=lambda c: c.vision_config.out_hidden_size))
register_mapping("qwen3_vl", BackboneMapping(
    "qwen3_vl", "Qwen3-VL (e.g. Qwen/Qwen3-VL-8B-Instruct)", vision_dim_of=lambda c: c.vision_config.out_hidden_size))
# InternVL-hf: the multi-modal projector maps pixel-shuffled ViT features to the LM hidden size.
register_mapping("internvl", BackboneMapping(
    "internvl", "InternVL, transformers-native '-hf' checkpoints (e.g. OpenGVLab/InternVL3-8B-hf)",
    vision_dim_of=lambda c: _text(c).hidden_size))
