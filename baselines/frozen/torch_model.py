"""The frozen zero-shot scorer as a plain ``nn.Module``: the VLM's P("1") at the answer position."""

from __future__ import annotations

import torch
from torch import nn

from copra_bench.vlm import ScoreOutput, VLMBackbone


class FrozenScorer(nn.Module):
    """Scores windows with the unmodified VLM: no parameter of it is trained or changed."""

    def __init__(self, backbone: VLMBackbone) -> None:
        super().__init__()
        self.backbone = backbone

    @torch.no_grad()
    def forward(self, frames: torch.Tensor, *, return_features: bool = True) -> ScoreOutput:
        return self.backbone.score(frames, return_features=return_features)
