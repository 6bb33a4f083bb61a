"""The LM-ready vision tokens of a forward pass: captured with a forward hook, split per input."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .errors import BackboneError

__all__ = ["capture_outputs", "split_per_input"]


@contextlib.contextmanager
def capture_outputs(module: nn.Module, *, active: bool) -> Iterator[list]:
    """Inside the context, every output of ``module`` is appended to the yielded list (nothing when inactive)."""
    captured: list = []
    if not active:
        yield captured
        return
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        yield captured
    finally:
        handle.remove()


def split_per_input(captured: list, inputs: Any, frames: list[int], config: Any, family: str) -> list[torch.Tensor]:
    """The vision tokens of each input (``[N_i, D]``) from the one captured output of the vision-token module:
    Qwen-VL's flat merged sequence split by ``video_grid_thw``, InternVL's ``[frames, tokens, D]`` by frame counts."""
    if len(captured) != 1:
        raise BackboneError(f"expected the vision-token module to run once per call, it ran {len(captured)} times")
    out = captured[0]
    tokens = getattr(out, "pooler_output", None)
    if tokens is None:
        tokens = out[0] if isinstance(out, (tuple, list)) else out
    if isinstance(tokens, (tuple, list)):
        tokens = torch.cat(list(tokens), dim=0)
    if tokens.dim() == 2 and "video_grid_thw" in inputs:
        merge = int(config.vision_config.spatial_merge_size)
        sizes = (inputs["video_grid_thw"].prod(-1) // merge**2).tolist()
        return list(torch.split(tokens, sizes, dim=0))
    if tokens.dim() == 3 and tokens.shape[0] == sum(frames):  # [frames, tokens per frame, D] (InternVL)
        return [t.flatten(0, 1) for t in torch.split(tokens, frames, dim=0)]
    raise BackboneError(f"cannot split vision tokens of shape {tuple(tokens.shape)} per input for family {family!r}")
