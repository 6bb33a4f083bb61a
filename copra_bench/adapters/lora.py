"""One LoRA shared by every input, on the language model's Linear layers that COPRA adapts (peft).

:class:`StaticLoRA` is the :class:`~copra_bench.adapters.StaticAdapter` of both static LoRA baselines (LoRA SFT and
static LoRA + GRPO). It injects peft ``LoraLayer``s into the frozen backbone in place, on exactly the layers the
family registry names (:mod:`copra_bench.vlm.families`: ``q, k, v, o, gate, up, down`` of the LM decoder, the same
modules as COPRA, never the vision tower), and keeps them *off* outside :meth:`StaticLoRA.adaptation`: outside the
context the backbone is the frozen reference (GRPO's KL term needs it).

The adapters are toggled through peft's ``_disable_adapters`` flag rather than ``enable_adapters()``, which would
also flip ``requires_grad`` of the LoRA weights on every call. LoRA weights are kept in float32 (as peft's
``autocast_adapter_dtype``) whatever the backbone's dtype, so small updates are not lost in bf16.

At test time the LoRA is merged into the base weights (:meth:`StaticLoRA.merge`): scoring then costs exactly what
the frozen model costs. :meth:`StaticLoRA.unmerge` restores the base weights (to float rounding).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from copra_bench.errors import CopraError
from copra_bench.vlm import VLMBackbone
from copra_bench.vlm.families import ALL_TARGETS

from .base import StaticAdapter

__all__ = ["StaticLoRA"]


class StaticLoRA(StaticAdapter):
    """A peft LoRA of rank ``rank`` on the backbone's LM ``target_modules`` of ``layers``, shared by all inputs.

    Args:
        backbone: the frozen VLM (adapted in place; its own weights are never trained).
        rank: LoRA rank r.
        alpha: LoRA alpha (scale = alpha / rank).
        target_modules: short names of the LM Linear layers (any of q, k, v, o, gate, up, down), as COPRA.
        layers: LM decoder layer indices (``None``: all; negative indices count from the top).
    """

    count_name = "lora_values"
    mergeable = True

    def __init__(self, backbone: VLMBackbone, *, rank: int = 8, alpha: float = 16.0,
                 target_modules: Sequence[str] = ALL_TARGETS, layers: Sequence[int] | None = None) -> None:
        super().__init__(backbone)
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.lora import LoraLayer

        if rank < 1:
            raise CopraError(f"model.rank must be >= 1, got {rank}")
        self.target_names = self._module_names(backbone, list(target_modules),
                                               None if layers is None else list(layers))
        self.config = LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=0.0, bias="none",
                                 target_modules=self.target_names, init_lora_weights=True,
                                 base_model_name_or_path=backbone.name)
        inject_adapter_in_model(self.config, backbone.model)
        self._layers = [m for m in backbone.model.modules() if isinstance(m, LoraLayer)]
        if len(self._layers) != len(self.target_names):
            raise CopraError(f"peft adapted {len(self._layers)} modules, expected {len(self.target_names)}")
        for layer in self._layers:
            for name in ("lora_A", "lora_B"):
                for linear in getattr(layer, name).values():
                    linear.float().requires_grad_(True)
        self._set_enabled(False)

    @staticmethod
    def _module_names(backbone: VLMBackbone, targets: Sequence[str], layers: Sequence[int] | None) -> list[str]:
        """Full names (in the transformers model) of the Linear modules the family gives for these targets."""
        family = backbone.family_spec
        unknown = [t for t in targets if t not in family.targets]
        if unknown or not targets:
            raise CopraError(f"model.target_modules: unknown LoRA targets {unknown or '[]'}; choose from "
                             f"{', '.join(family.targets)}")
        decoder = family.decoder_layers_of(backbone.model)
        n = len(decoder)
        if layers is None:
            chosen = list(range(n))
        else:
            bad = [i for i in layers if not -n <= int(i) < n]
            if bad:
                raise CopraError(f"model.layers: indices {bad} out of range for a {n}-layer language model")
            chosen = sorted({int(i) % n for i in layers})
            if not chosen:
                raise CopraError("model.layers is empty: give LM layer indices, or null for all layers")
        wanted = {id(family.target_module(decoder[i], t)) for i in chosen for t in dict.fromkeys(targets)}
        return [name for name, module in backbone.model.named_modules() if id(module) in wanted]

    # ------------------------------------------------------------------------------------------------- state
    def lora_parameters(self) -> list[nn.Parameter]:
        """A and B of every adapted layer, layer by layer."""
        return [p for layer in self._layers for name in ("lora_A", "lora_B")
                for linear in getattr(layer, name).values() for p in linear.parameters()]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.lora_parameters()

    @property
    def merged(self) -> bool:
        return any(layer.merged for layer in self._layers)

    def _set_enabled(self, enabled: bool) -> None:
        for layer in self._layers:
            layer._disable_adapters = not enabled

    @torch.no_grad()
    def merge(self) -> None:
        """Add B A * scale into the base weights: a forward then costs what the frozen model's costs. While merged
        the backbone is the adapted model inside and outside :meth:`adaptation` (peft would unmerge a disabled
        layer on its next forward), until :meth:`unmerge`."""
        for layer in self._layers:
            if not layer.merged:
                layer.merge()
        self._set_enabled(True)

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the LoRA from the base weights again (restored to float rounding); the adapters are off."""
        for layer in self._layers:
            if layer.merged:
                layer.unmerge()
        self._set_enabled(False)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the LoRA as a peft adapter directory (``adapter_config.json``, ``adapter_model.safetensors``):
        ``PeftModel.from_pretrained(model, path)`` applies it to the same checkpoint outside this project."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(str(path))
        modules = dict(self.backbone.model.named_modules())
        tensors = {}
        for name in self.target_names:
            layer = modules[name]
            for matrix in ("lora_A", "lora_B"):
                weight = getattr(layer, matrix)["default"].weight
                tensors[f"base_model.model.{name}.{matrix}.weight"] = weight.detach().cpu().contiguous()
        save_file(tensors, str(path / "adapter_model.safetensors"))
        return path

    # ------------------------------------------------------------------------------------------- adaptation
    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The LoRA layers on (one LoRA for every row)."""
        self._set_enabled(True)
        try:
            yield
        finally:
            # A merged LoRA stays enabled: peft unmerges a disabled layer on its next forward.
            self._set_enabled(self.merged)
