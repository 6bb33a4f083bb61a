"""Gradient checkpointing of the frozen LM, one decoder layer at a time, that keeps the backbone in eval mode.

transformers checkpoints a decoder layer only when the model is in training mode (``GradientCheckpointingLayer``
tests ``self.gradient_checkpointing and self.training``), but the frozen backbone stays in eval mode (no dropout,
the reference behaviour GRPO's KL compares against). :func:`lm_checkpointing` therefore wraps each decoder layer's
``forward`` itself with ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`` for the duration of a
context: a layer keeps only its input hidden states for backward and recomputes the rest there.

The recomputation calls the layer's sub-modules again, so whatever adapts them (COPRA's injected per-input LoRA,
a peft LoRA switched on) must still be active when backward runs: :meth:`GRPOEngine.backward
<copra_bench.rl.engine.GRPOEngine.backward>` runs each micro-batch's backward inside its adaptation context.
Non-reentrant checkpointing also lets gradients reach tensors that are not inputs of the layer (the LoRA values).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from .errors import BackboneError

__all__ = ["check_checkpointing", "lm_checkpointing"]


def check_checkpointing(family: Any, key: str = "model.init_args.lm_checkpointing") -> None:
    """Refuse LM checkpointing on a family whose record says it cannot (before any weight loads; ``None``: not
    known yet, nothing to check)."""
    if family is not None and not family.lm_checkpointing:
        raise BackboneError(f"{key}: true, but the {family.human} family cannot checkpoint its LM decoder layers "
                            f"(VLMFamily.lm_checkpointing is False): set {key}: false and lower "
                            "model.init_args.loss_micro_batch instead")


@contextlib.contextmanager
def lm_checkpointing(backbone: Any, *, active: bool = True) -> Iterator[None]:
    """Inside the context each LM decoder layer of ``backbone`` (a ``VLMBackbone``) is recomputed in backward
    when grad is enabled; outside it, or with ``active=False``, nothing changes."""
    if not active:
        yield
        return
    check_checkpointing(backbone.family_spec)
    layers = backbone.family_spec.decoder_layers_of(backbone.model)
    saved = []
    try:
        for layer in layers:
            previous = layer.__dict__.get("forward")
            saved.append((layer, previous))
            layer.forward = _checkpointed(layer.forward)
        yield
    finally:
        for layer, previous in saved:
            if previous is None:
                layer.__dict__.pop("forward", None)
            else:
                layer.forward = previous


def _checkpointed(forward):
    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        if kwargs.get("past_key_values") is not None:  # a recomputed layer would write its KV cache twice
            raise BackboneError("LM checkpointing recomputes layers in backward and cannot fill a KV cache: "
                                "call the model with use_cache=False")
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run
