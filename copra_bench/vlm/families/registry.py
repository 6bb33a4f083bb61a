"""What a VLM family is, in one record, and the registry of the supported families.

A :class:`VLMFamily` holds everything the benchmark knows about one transformers ``model_type``: its name, where its
vision encoder, LM decoder and vision-token output live, its LM decoder layers and their Linear modules (COPRA's and
the static LoRA's targets), the size of the conditioning tokens, what its processor and forward accept, and how its
forward derives positions. :class:`~copra_bench.vlm.VLMBackbone`, COPRA's mappings, the static LoRA and prompt
tuning all read it from here: :func:`family_of`.

Each family is one module of this package (``qwen2_vl.py`` ...) calling :func:`register_family`; every module of the
package is imported by ``copra_bench.vlm.families``, so adding a family is one new file plus a subclass of the shared
contract in ``tests/test_families.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from ..errors import BackboneError

__all__ = [
    "ALL_TARGETS",
    "LLAMA_TARGETS",
    "PositionScheme",
    "VLMFamily",
    "family_of",
    "register_family",
    "registered_families",
    "unsupported_message",
]

#: Short target names, in canonical order (attention q, k, v, o; MLP gate, up, down).
ALL_TARGETS: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")

#: Short target name -> its ``nn.Linear`` inside one decoder layer of a Llama-style LM (Qwen2, Qwen3 ...).
LLAMA_TARGETS: Mapping[str, str] = MappingProxyType({
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
})

_WHERE = "copra_bench/vlm/families/"


@dataclass(frozen=True)
class PositionScheme:
    """How a family's forward derives token positions from ``input_ids`` (what lets inserted ids, e.g. a soft
    prompt's, get correct positions).

    Attributes:
        description: the scheme in words (shown in errors).
        requires: attribute of the inner model (``model.model``) the scheme relies on, or None.
    """

    description: str
    requires: str | None = None


@dataclass(frozen=True, kw_only=True)
class VLMFamily:
    """Everything the benchmark needs to know about one VLM family (one transformers ``model_type``).

    Module paths are dotted paths tried in order from the ``*ForConditionalGeneration`` model (several, for
    transformers versions that moved them).

    Attributes:
        model_type: ``config.model_type`` of its checkpoints.
        name: readable name; ``note`` qualifies which checkpoints; ``example``: a checkpoint of the family.
        vision_encoder: paths of the frozen vision encoder.
        language_model: paths of the LM decoder (where LoRA deltas go).
        vision_tokens: paths of the module whose output holds the LM-ready vision tokens (after merger/projector).
        vision_dim_of: ``config -> D`` of those tokens (the conditioning tokens of COPRA).
        decoder_layers: path, inside the LM decoder, of its decoder-layer ``ModuleList``: where the LoRA targets
            live (COPRA and the static LoRA index it) and the blocks gradient checkpointing of the LM recomputes.
        targets: short target name -> dotted path of its ``nn.Linear`` inside one decoder layer.
        shared_inputs: groups of targets whose Linear modules read the same input tensor (fused by COPRA).
        positions: how its forward derives positions (None: unknown, so prompt tuning refuses the family).
        reuses_vision_outputs: its forward accepts precomputed vision outputs made of ``pooler_output`` alone
            (``mm_encoder_outputs``), so one vision-encoder pass can both condition an adaptation and feed the LM.
        same_frames_per_batch: its processor needs the same number of frames for every video of a batch.
        lm_checkpointing: its LM decoder layers can be recomputed in backward one at a time
            (:func:`copra_bench.vlm.checkpointing.lm_checkpointing`): each layer is a module called with the hidden
            states and keyword arguments, with no state kept between calls when ``use_cache=False``.
        unsupported_variants: other ``model_type`` values its checkpoints come in -> what to use instead.
        tiny_model: name of its built-in tiny random model (``VLMBackbone.load(name)``), built by ``build_tiny``
            ``(seed=0, attn_implementation=None) -> (model, processor)``.
    """

    model_type: str
    name: str
    example: str
    note: str = ""
    vision_encoder: tuple[str, ...]
    language_model: tuple[str, ...] = ("model.language_model", "language_model")
    vision_tokens: tuple[str, ...]
    vision_dim_of: Callable[[Any], int]
    decoder_layers: str = "layers"
    targets: Mapping[str, str] = field(default_factory=lambda: LLAMA_TARGETS)
    shared_inputs: tuple[tuple[str, ...], ...] = (("q", "k", "v"), ("gate", "up"))
    positions: PositionScheme | None
    reuses_vision_outputs: bool = False
    same_frames_per_batch: bool = False
    lm_checkpointing: bool = True
    unsupported_variants: Mapping[str, str] = field(default_factory=dict)
    tiny_model: str | None = None
    build_tiny: Callable[..., tuple] | None = None

    def __reduce__(self):
        # A registered family pickles as its name (its callables are lambdas and builders, which do not pickle):
        # ``ddp_spawn`` and DataLoader workers send the model, and the family, to other processes.
        if _REGISTRY.get(self.model_type) is self:
            return (_registered, (self.model_type,))
        return super().__reduce__()

    @property
    def human(self) -> str:
        """``"Qwen2-VL (e.g. Qwen/Qwen2-VL-7B-Instruct)"``: how errors and listings name the family."""
        return f"{self.name}{', ' + self.note if self.note else ''} (e.g. {self.example})"

    # ------------------------------------------------------------------ modules
    def resolve(self, model: nn.Module, paths: Sequence[str], what: str) -> nn.Module:
        """The first of ``paths`` that exists in ``model``."""
        for path in paths:
            try:
                return model.get_submodule(path)
            except AttributeError:
                continue
        raise BackboneError(
            f"cannot find the {what} of this {self.model_type!r} model (tried {', '.join(paths)}); update the "
            f"family module in {_WHERE}{self.model_type}.py for this transformers version"
        )

    def vision_encoder_of(self, model: nn.Module) -> nn.Module:
        return self.resolve(model, self.vision_encoder, "vision encoder")

    def language_model_of(self, model: nn.Module) -> nn.Module:
        return self.resolve(model, self.language_model, "language model")

    def vision_tokens_of(self, model: nn.Module) -> nn.Module:
        return self.resolve(model, self.vision_tokens, "vision-token output module")

    def decoder_layers_of(self, model: nn.Module) -> nn.ModuleList:
        """The LM decoder layers, in depth order."""
        lm = self.language_model_of(model)
        try:
            return lm.get_submodule(self.decoder_layers)  # type: ignore[return-value]
        except AttributeError as err:
            raise BackboneError(
                f"{self.model_type!r}: the language model has no {self.decoder_layers!r} layer list"
            ) from err

    def target_module(self, layer: nn.Module, target: str) -> nn.Linear:
        """The ``nn.Linear`` of ``target`` inside one decoder layer."""
        if target not in self.targets:
            raise BackboneError(
                f"{self.model_type!r} has no target {target!r}; choose from {', '.join(self.targets)}"
            )
        module = layer.get_submodule(self.targets[target])
        if not isinstance(module, nn.Linear):
            raise BackboneError(
                f"{self.model_type!r}: {self.targets[target]} is a {type(module).__name__}, not nn.Linear "
                "(a quantised or already-adapted model?); LoRA adapters go into plain frozen Linear layers"
            )
        return module

    def target_shapes(self, model: nn.Module, targets: Sequence[str] = ALL_TARGETS) -> dict[str, tuple[int, int]]:
        """target -> ``(in_features, out_features)``, checked to be the same in every decoder layer."""
        layers = self.decoder_layers_of(model)
        shapes: dict[str, tuple[int, int]] = {}
        for t in targets:
            sizes = {(m.in_features, m.out_features) for m in (self.target_module(layer, t) for layer in layers)}
            if len(sizes) != 1:
                raise BackboneError(
                    f"{self.model_type!r}: target {t!r} has different sizes across layers: {sorted(sizes)}"
                )
            shapes[t] = sizes.pop()
        return shapes

    def vision_dim(self, config: Any) -> int:
        """``D`` of the conditioning tokens (:meth:`VLMBackbone.vision_features` rows) for this ``config``."""
        return int(self.vision_dim_of(config))

    def missing_position_support(self, model: nn.Module) -> str | None:
        """What this model lacks for :attr:`positions` (None when it has it)."""
        needed = self.positions.requires if self.positions is not None else None
        inner = getattr(model, "model", model)
        return needed if needed is not None and not hasattr(inner, needed) else None


_REGISTRY: dict[str, VLMFamily] = {}


def _registered(model_type: str) -> VLMFamily:
    """The registered family of ``model_type`` (how a pickled family comes back; see ``VLMFamily.__reduce__``)."""
    # Unpickling imports this module, hence its package, which imports and registers every built-in family; a
    # family registered by user code must be imported by the receiving process too.
    if model_type not in _REGISTRY:
        raise LookupError(f"VLM family {model_type!r} is not registered in this process: import the module that "
                          "registers it before unpickling")
    return _REGISTRY[model_type]


def register_family(family: VLMFamily) -> VLMFamily:
    """Register (or replace) ``family`` for models whose ``config.model_type`` is ``family.model_type``."""
    _REGISTRY[family.model_type] = family
    return family


def registered_families() -> dict[str, VLMFamily]:
    """model_type -> family, in registration order."""
    return dict(_REGISTRY)


def _model_type(backbone_or_model: Any) -> str | None:
    if isinstance(backbone_or_model, str) or backbone_or_model is None:
        return backbone_or_model
    family = getattr(backbone_or_model, "family", None)  # a VLMBackbone
    if isinstance(family, str):
        return family
    model = getattr(backbone_or_model, "model", backbone_or_model)
    config = getattr(backbone_or_model, "config", None) or getattr(model, "config", None)
    return getattr(config, "model_type", None)


def family_of(backbone_or_model: Any, *, where: str | None = None) -> VLMFamily:
    """The family of a ``model_type`` string, a ``VLMBackbone`` or a transformers model.

    Raises:
        BackboneError: no registered family (the message lists the supported ones and how to add one; ``where``
            names the checkpoint).
    """
    model_type = _model_type(backbone_or_model)
    family = _REGISTRY.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        raise BackboneError(unsupported_message(model_type, where))
    return family


def unsupported_message(model_type: str | None, where: str | None = None) -> str:
    """Why ``model_type`` is refused: the supported families, a hint for a known variant, how to add one."""
    families = "; ".join(f"{k} ({f.human})" for k, f in _REGISTRY.items())
    hint = next((f" {f.unsupported_variants[model_type]}" for f in _REGISTRY.values()
                 if model_type in f.unsupported_variants), "")
    place = f" in {where!r}" if where else ""
    return (
        f"unsupported model_type {model_type!r}{place}.{hint} Supported families: {families}. To add a family, add "
        f"one module to {_WHERE} registering a VLMFamily (model_type -> vision encoder, language model, vision-token "
        "module and decoder-layer paths, LoRA target Linear names, vision-token size, position scheme) and run the "
        "shared contract on it in tests/test_families.py"
    )
