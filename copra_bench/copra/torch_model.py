"""COPRA as a plain ``nn.Module``: condition encoder (the frozen VLM's vision encoder) -> generator -> injected LoRA.

Kept apart from the LightningModule (training loop, data, logging) so it can be used and benchmarked on its own:

    model = COPRAModel(VLMBackbone.load("tiny-qwen2-vl"), rank=8, width=64, depth=1)
    deltas = model.generate_deltas(frames)            # one LoRA per input
    scores = model.score(frames, deltas)              # P("1") of the adapted VLM
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from copra_bench.copra.generator import ParameterGenerator
from copra_bench.copra.injection import LoRAInjector
from copra_bench.copra.layout import LoRADeltas
from copra_bench.copra.mappings import mapping_for
from copra_bench.vlm import ScoreOutput, VLMBackbone


class COPRAModel(nn.Module):
    """Generator of per-input LoRA updates for a frozen :class:`VLMBackbone`, and their injection.

    Args:
        backbone: The frozen VLM (its vision encoder is the condition encoder; its language model is adapted).
        rank, alpha: LoRA rank and alpha (scale alpha / rank).
        target_modules: Short names of the adapted Linear layers (q, k, v, o, gate, up, down).
        layers: LM layer indices to adapt (``None``: all).
        depth: Generator blocks (``None``: half the LM depth, at least 1).
        width, heads: Generator token width and attention heads.
        segment_size: ``d_seg`` of the rank-anchored token slices.
        global_latent: Start the parameter tokens from the learned global latent prior.
        checkpointing: Activation checkpointing in the generator (large layouts).
    """

    def __init__(self, backbone: VLMBackbone, *, rank: int = 8, alpha: float = 16.0,
                 target_modules: Sequence[str] = ("q", "k", "v", "o", "gate", "up", "down"),
                 layers: Sequence[int] | None = None, depth: int | None = None, width: int = 512, heads: int = 8,
                 segment_size: int = 512, global_latent: bool = True, checkpointing: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.mapping = mapping_for(backbone)
        self.layout = self.mapping.layout(backbone, rank=rank, targets=list(target_modules),
                                          layers="all" if layers is None else list(layers), d_seg=segment_size)
        if depth is None:
            depth = max(1, self.mapping.num_layers(backbone) // 2)
        self.generator = ParameterGenerator(self.layout, vision_dim=self.mapping.vision_dim(backbone), width=width,
                                            depth=depth, heads=heads, alpha=alpha, global_latent=global_latent,
                                            checkpointing=checkpointing)
        # bf16 backbone: the generator computes in bf16 autocast too (about half its float32 time on a GPU)
        self.generator.autocast_dtype = backbone.dtype if backbone.dtype in (torch.bfloat16, torch.float16) else None
        self.injector = LoRAInjector(backbone, self.mapping, self.layout)

    def generator_parameters(self) -> int:
        return self.generator.num_parameters()

    def generated_values(self) -> int:
        """LoRA values written per input."""
        return self.generator.num_generated_values()

    def condition_tokens(self, frames: Any) -> list[torch.Tensor]:
        """The frozen vision encoder's tokens of each input's K frames (no gradient: the encoder is frozen)."""
        return self.mapping.conditioning_tokens(self.backbone, frames)

    def generate_deltas(self, frames: Any) -> LoRADeltas:
        """One LoRA update per input, conditioned on its frames."""
        return self.generator(self.condition_tokens(frames))

    def adaptation(self, deltas: LoRADeltas) -> InjectedAdaptation:
        """The GRPO engine's adaptation: ``adaptation(repeats)`` injects ``deltas`` for rows repeated ``repeats``
        times per input (see :class:`InjectedAdaptation`)."""
        return InjectedAdaptation(self.injector, deltas)

    def score(self, frames: Any, deltas: LoRADeltas, *, return_features: bool = False) -> ScoreOutput:
        """Anomaly scores of the adapted VLM (its P("1") at the answer position), one LoRA per input."""
        with self.injector.apply(deltas):
            return self.backbone.score(frames, return_features=return_features)

    def score_self_conditioned(self, frames: Any, *, return_features: bool = False) -> ScoreOutput:
        """Scores with each input's LoRA generated from its own frames (window granularity), encoding them once."""
        return self.backbone.score_conditioned(
            frames, lambda tokens: self.injector.apply(self.generator(tokens)), return_features=return_features)

    def forward(self, frames: Any, *, return_features: bool = False) -> ScoreOutput:
        return self.score_self_conditioned(frames, return_features=return_features)


class InjectedAdaptation:
    """Generated per-input LoRA deltas as an adaptation of the GRPO engine (:mod:`copra_bench.rl.engine`).

    ``adaptation(repeats)`` injects them; ``select(inputs)`` restricts them to some inputs (a micro-batch);
    ``accumulate()`` returns an adaptation over detached leaf copies of the deltas and ``finish(backward)``, which
    backpropagates the gradient the micro-batches accumulated in the leaves through the generator once: the
    surrogate ``sum_t <deltas_t, grad_t>`` has exactly the gradient ``sum_t grad_t * d deltas_t / d theta``, so the
    generator runs (and is differentiated) once per step however many micro-batches the loss takes.
    """

    def __init__(self, injector: LoRAInjector, deltas: LoRADeltas) -> None:
        self.injector, self.deltas = injector, deltas

    def __call__(self, repeats: int = 1):
        return self.injector.apply(self.deltas, repeats=repeats)

    def select(self, inputs: range) -> InjectedAdaptation:
        return InjectedAdaptation(self.injector, self.deltas.select(slice(inputs.start, inputs.stop)))

    def accumulate(self):
        leaves = self.deltas._map(lambda t: t.detach().requires_grad_(t.requires_grad))

        def finish(backward) -> None:
            pairs = [(t, leaf.grad) for t, leaf in zip(_tensors(self.deltas), _tensors(leaves), strict=True)
                     if leaf.grad is not None and t.requires_grad]
            if pairs:
                backward(sum((t * grad.to(t.dtype)).sum() for t, grad in pairs))

        return InjectedAdaptation(self.injector, leaves), finish


def _tensors(deltas: LoRADeltas) -> list[torch.Tensor]:
    return [*deltas.A.values(), *deltas.B.values()]
