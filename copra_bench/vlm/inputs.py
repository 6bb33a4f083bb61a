"""Turning a batch of videos into model inputs: clip validation, the chat prompt, the processor call, fix-ups.

:meth:`VLMBackbone._prepare <copra_bench.vlm.backbone.VLMBackbone._prepare>` chains these steps; each is a function
of explicit arguments so that it can be read and tested on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .errors import BackboneError
from .families import VLMFamily

__all__ = [
    "add_mm_token_type_ids",
    "as_clip_list",
    "chat_prompt",
    "check_frame_counts",
    "process_videos",
    "single_token_ids",
    "to_model",
    "video_processor_kwargs",
]


def as_clip_list(videos) -> list[torch.Tensor]:
    """uint8 ``[B, K, H, W, 3]`` tensor/array or a list of ``[K, H, W, 3]`` -> list of CPU uint8 tensors."""
    if isinstance(videos, np.ndarray):
        videos = torch.from_numpy(videos)
    if isinstance(videos, torch.Tensor):
        if videos.dim() != 5:
            raise BackboneError(
                f"videos must be [B, K, H, W, 3] uint8 (or a list of [K, H, W, 3]); got shape {tuple(videos.shape)}"
            )
        clips = list(videos.unbind(0))
    elif isinstance(videos, (list, tuple)):
        clips = [torch.from_numpy(v) if isinstance(v, np.ndarray) else v for v in videos]
    else:
        raise BackboneError(
            f"videos must be a uint8 tensor [B, K, H, W, 3] or a list of [K, H, W, 3]; got {type(videos)!r}"
        )
    if not clips:
        raise BackboneError("empty batch of videos")
    for i, clip in enumerate(clips):
        if not isinstance(clip, torch.Tensor) or clip.dim() != 4 or clip.shape[-1] != 3:
            shape = tuple(clip.shape) if hasattr(clip, "shape") else type(clip)
            raise BackboneError(f"video {i} must be [K, H, W, 3] RGB frames; got {shape}")
        if clip.dtype != torch.uint8:
            raise BackboneError(f"video {i} must be uint8 (0-255); got {clip.dtype}")
    return [c.detach().cpu() for c in clips]


def single_token_ids(tokenizer: Any, texts: Sequence[str], name: str) -> tuple[int, ...]:
    """The id of each of ``texts``, each of which must be one token of ``tokenizer`` (of the model ``name``)."""
    result = []
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise BackboneError(
                f"answer {text!r} is not a single token for the {name!r} tokenizer (ids {ids}); "
                "the binary score needs '0' and '1' to be single tokens"
            )
        result.append(int(ids[0]))
    return tuple(result)


def check_frame_counts(family: VLMFamily, frames: list[int]) -> None:
    """Refuse a batch mixing frame counts where the family's processor cannot take one (InternVL)."""
    if family.same_frames_per_batch and len(set(frames)) > 1:
        raise BackboneError(
            f"{family.name}'s processor needs the same number of frames for every video of a batch; got {frames}"
        )


def chat_prompt(processor: Any, tokenizer: Any, system_prompt: str, user_prompt: str) -> str:
    """Chat template with the system prompt, one video and the user prompt, ending with the assistant header
    (``add_generation_prompt=True``)."""
    messages = [
        {"role": "system", "content": [{"type": "text", "text": system_prompt}]},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": user_prompt}]},
    ]
    templater = processor if getattr(processor, "chat_template", None) else tokenizer
    return templater.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def video_processor_kwargs(processor: Any, accepted: set[str], frames: list[int], *, fps: float,
                           device: torch.device, extra: dict[str, Any]) -> dict[str, Any]:
    """``videos_kwargs`` of the processor call for clips of ``frames`` frames already sampled at ``fps``.

    ``accepted`` are the keyword names the video processor takes; ``extra`` (the backbone's ``video_kwargs``) wins.
    """
    vkw: dict[str, Any] = {"do_sample_frames": False, "input_data_format": "channels_first"}
    vkw["video_metadata"] = [{"total_num_frames": k, "fps": fps, "frames_indices": list(range(k))} for k in frames]
    vp = getattr(processor, "video_processor", None)
    if "cap_pixels_per_frame" in accepted and getattr(vp, "cap_pixels_per_frame", 0) is None:
        vkw["cap_pixels_per_frame"] = False  # K frames per clip: the cap never binds; silences a warning
    if device.type != "cpu" and "device" in accepted:
        # Resize/normalise/patchify on the accelerator: on CPU this costs ~0.2 s per 8 windows of real size,
        # as much as half a 7B forward on an H200.
        vkw["device"] = str(device)
    vkw.update(extra)
    return vkw


def process_videos(processor: Any, text: str, clips: list[torch.Tensor], videos_kwargs: dict[str, Any]):
    """The processor's ``BatchFeature`` for one prompt per clip, left-padded."""
    return processor(
        text=[text] * len(clips),
        videos=[c.permute(0, 3, 1, 2).contiguous() for c in clips],
        padding=True,
        padding_side="left",
        return_tensors="pt",
        videos_kwargs=videos_kwargs,
    )


def add_mm_token_type_ids(inputs, config: Any, forward_params: set[str]):
    """transformers 5.x Qwen-VL needs ``mm_token_type_ids`` (0 text, 1 image, 2 video) with ``video_grid_thw``;
    the processor returns them, this covers processors that do not."""
    needed = "video_grid_thw" in inputs and "mm_token_type_ids" in forward_params
    if needed and "mm_token_type_ids" not in inputs:
        ids = inputs["input_ids"]
        types = torch.zeros_like(ids)
        if getattr(config, "image_token_id", None) is not None:
            types[ids == config.image_token_id] = 1
        if getattr(config, "video_token_id", None) is not None:
            types[ids == config.video_token_id] = 2
        inputs["mm_token_type_ids"] = types
    return inputs


def to_model(inputs, device: torch.device, dtype: torch.dtype):
    """Every tensor on ``device``; floating pixel values also in the model's ``dtype``."""
    for key in list(inputs.keys()):
        value = inputs[key]
        if isinstance(value, torch.Tensor):
            if key.startswith("pixel_values") and value.is_floating_point():
                inputs[key] = value.to(device=device, dtype=dtype)
            else:
                inputs[key] = value.to(device)
    return inputs
