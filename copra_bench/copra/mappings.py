"""Backbone mappings: COPRA's view of a VLM family — where its LoRA goes and where its conditioning tokens come from.

Everything about a family (LM decoder path, decoder-layer list, the Linear behind each short target name ``q`` ->
``self_attn.q_proj`` ... ``down`` -> ``mlp.down_proj``, which targets read the same input, the size of the vision
tokens) is registered once in :mod:`copra_bench.vlm.families`. A :class:`BackboneMapping` is a thin view over that
:class:`~copra_bench.vlm.families.VLMFamily` that takes a ``VLMBackbone`` or a transformers model, raises
:class:`MappingError`, and adds what only COPRA needs: the :class:`LoRALayout` of a backbone and its conditioning
tokens (the frozen vision encoder's tokens after the merger / projector, as :meth:`VLMBackbone.vision_features`
returns them).

Adding a family: one module in ``copra_bench/vlm/families/`` (see that package); COPRA then maps it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from copra_bench.errors import CopraError
from copra_bench.vlm.errors import BackboneError
from copra_bench.vlm.families import ALL_TARGETS, VLMFamily, family_of

from .layout import LayoutError, LoRALayout

__all__ = ["BackboneMapping", "MappingError", "mapping_for"]


class MappingError(CopraError, ValueError):
    """A backbone has no COPRA mapping, or its modules do not look like the mapping says."""


@contextlib.contextmanager
def _as_mapping_error() -> Iterator[None]:
    try:
        yield
    except BackboneError as err:
        raise MappingError(str(err)) from err


def _unwrap(backbone_or_model: Any) -> nn.Module:
    """The transformers ``*ForConditionalGeneration`` model of a ``VLMBackbone`` (or the model itself)."""
    model = getattr(backbone_or_model, "model", None)
    if hasattr(backbone_or_model, "vision_features") and isinstance(model, nn.Module):
        return model
    if isinstance(backbone_or_model, nn.Module):
        return backbone_or_model
    raise MappingError(f"expected a VLMBackbone or a transformers model, got {type(backbone_or_model)!r}")


@dataclass(frozen=True, eq=False)
class BackboneMapping:
    """How COPRA reaches the parts of one VLM family: a view over its registered :class:`VLMFamily`."""

    spec: VLMFamily

    @property
    def family(self) -> str:
        """transformers ``model_type`` (``config.model_type``)."""
        return self.spec.model_type

    @property
    def human(self) -> str:
        return self.spec.human

    @property
    def targets(self) -> Mapping[str, str]:
        """Short target name -> dotted path of its ``nn.Linear`` inside one decoder layer."""
        return self.spec.targets

    @property
    def shared_inputs(self) -> tuple[tuple[str, ...], ...]:
        return self.spec.shared_inputs

    # ------------------------------------------------------------------ modules
    def language_model_of(self, backbone_or_model: Any) -> nn.Module:
        with _as_mapping_error():
            return self.spec.language_model_of(_unwrap(backbone_or_model))

    def decoder_layers(self, backbone_or_model: Any) -> nn.ModuleList:
        """The LM decoder layers, in depth order."""
        with _as_mapping_error():
            return self.spec.decoder_layers_of(_unwrap(backbone_or_model))

    def num_layers(self, backbone_or_model: Any) -> int:
        return len(self.decoder_layers(backbone_or_model))

    def target_module(self, layer: nn.Module, target: str) -> nn.Linear:
        """The ``nn.Linear`` of ``target`` inside one decoder layer."""
        with _as_mapping_error():
            return self.spec.target_module(layer, target)

    def target_shapes(self, backbone_or_model: Any, targets: Sequence[str] = ALL_TARGETS) -> dict[str, tuple[int, int]]:
        """target -> ``(in_features, out_features)``, checked to be the same in every decoder layer."""
        with _as_mapping_error():
            return self.spec.target_shapes(_unwrap(backbone_or_model), targets)

    # ------------------------------------------------------------------ conditioning tokens
    def vision_dim(self, backbone_or_model: Any) -> int:
        """``D`` of the conditioning tokens (:meth:`VLMBackbone.vision_features` rows)."""
        return self.spec.vision_dim(_unwrap(backbone_or_model).config)

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


_VIEWS: dict[str, BackboneMapping] = {}


def mapping_for(backbone_or_model: Any) -> BackboneMapping:
    """The mapping of a ``VLMBackbone``, a transformers model, or a ``model_type`` string (one view per registered
    family, so repeated lookups return the same object)."""
    if not isinstance(backbone_or_model, str) and not hasattr(backbone_or_model, "family"):
        backbone_or_model = _unwrap(backbone_or_model)
    with _as_mapping_error():
        spec = family_of(backbone_or_model)
    view = _VIEWS.get(spec.model_type)
    if view is None or view.spec is not spec:
        view = _VIEWS[spec.model_type] = BackboneMapping(spec)
    return view
