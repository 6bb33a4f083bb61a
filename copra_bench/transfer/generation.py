"""Batched greedy answers of a (possibly adapted) VLM to documents with their own prompts.

The steps are :meth:`VLMBackbone._prepare <copra_bench.vlm.backbone.VLMBackbone._prepare>`'s (the functions of
:mod:`copra_bench.vlm.inputs`, the backbone's input transforms, e.g. a soft prompt) with one chat prompt per row
instead of the VAD prompt, then the backbone's own ``generate`` call (:func:`copra_bench.vlm.generation.
decoded_completions`: HF ``generate`` with the KV cache, left-padded batch). The adaptation is entered around that
call with the GRPO engine's protocol (:data:`copra_bench.rl.engine.Adaptation`, ``repeats=1``): COPRA's injected
per-input LoRA, a static adapter, or none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch

from copra_bench.vlm import VLMBackbone
from copra_bench.vlm.generation import decoded_completions
from copra_bench.vlm.inputs import (
    add_mm_token_type_ids,
    as_clip_list,
    check_frame_counts,
    to_model,
    video_processor_kwargs,
)

__all__ = ["Adapter", "choose_letters", "generate_answers", "prepare_documents"]

#: ``adapter(clips) -> context manager`` inside which the backbone answers these clips adapted (None: frozen).
Adapter = Callable[[list[torch.Tensor]], AbstractContextManager]


def _chat_text(backbone: VLMBackbone, messages: list[dict[str, Any]]) -> str:
    processor = backbone.processor
    templater = processor if getattr(processor, "chat_template", None) else backbone.tokenizer
    return templater.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def prepare_documents(backbone: VLMBackbone, messages: Sequence[list[dict[str, Any]]], clips: list[torch.Tensor],
                      fps: Sequence[float]):
    """Processor outputs for one prompt and one clip per row, left-padded, on the model's device.

    ``fps`` is each clip's sampled frame rate (K frames over the document's duration): the video metadata
    Qwen2.5/3-VL read their temporal positions from.
    """
    clips = as_clip_list(clips)
    frames = [int(c.shape[0]) for c in clips]
    check_frame_counts(backbone.family_spec, frames)
    vkw = video_processor_kwargs(backbone.processor, backbone._video_kwarg_names, frames, fps=backbone.video_fps,
                                 device=backbone.device, extra=backbone.video_kwargs)
    vkw["video_metadata"] = [{"total_num_frames": k, "fps": float(f), "frames_indices": list(range(k))}
                             for k, f in zip(frames, fps, strict=True)]
    inputs = backbone.processor(text=[_chat_text(backbone, m) for m in messages],
                                videos=[c.permute(0, 3, 1, 2).contiguous() for c in clips], padding=True,
                                padding_side="left", return_tensors="pt", videos_kwargs=vkw)
    inputs = add_mm_token_type_ids(inputs, backbone.model.config, backbone._forward_params)
    for transform in backbone._input_transforms:
        inputs = transform(inputs)
    return to_model(inputs, backbone.device, backbone.dtype)


def checkpoint_repetition_penalty(backbone: VLMBackbone) -> float:
    """The checkpoint's ``generation_config.repetition_penalty`` (what a plain ``model.generate`` uses, as the
    benchmarks' scripts call it), 1.0 when unset."""
    value = getattr(backbone.model.generation_config, "repetition_penalty", None)
    return float(value) if value else 1.0


@torch.no_grad()
def generate_answers(backbone: VLMBackbone, messages: Sequence[list[dict[str, Any]]], clips: list[torch.Tensor],
                     fps: Sequence[float], *, max_new_tokens: int, adapter: Adapter | None = None,
                     repetition_penalty: float | None = None) -> list[str]:
    """Greedy completions (prompt removed, special tokens skipped), one per row, under ``adapter(clips)``.

    ``repetition_penalty`` None uses the checkpoint's own (Qwen2-VL-Instruct ships 1.05), as the benchmarks'
    ``model.generate(max_new_tokens=..., do_sample=False)`` does.
    """
    penalty = checkpoint_repetition_penalty(backbone) if repetition_penalty is None else float(repetition_penalty)
    context = contextlib.nullcontext() if adapter is None else adapter(as_clip_list(clips))
    with context:  # entered before the inputs are prepared: a soft prompt adapts them (an input transform)
        inputs = prepare_documents(backbone, messages, clips, fps)
        return decoded_completions(backbone.model, backbone.tokenizer, inputs, max_new_tokens=max_new_tokens,
                                   do_sample=False, temperature=1.0, num_return_sequences=1, top_k=None, top_p=1.0,
                                   repetition_penalty=penalty)


@torch.no_grad()
def choose_letters(backbone: VLMBackbone, messages: Sequence[list[dict[str, Any]]], clips: list[torch.Tensor],
                   fps: Sequence[float], *, letters: Sequence[str], adapter: Adapter | None = None) -> list[str]:
    """The letter of ``letters`` with the highest next-token logit right after each prompt (one forward, last
    position only): lmms-eval's ``output_type: multiple_choice`` scoring by likelihood instead of parsing a
    generated answer. Every row gets an answer, so it measures preference even for a model that cannot yet follow
    the answer format (the built-in random tiny models); it is not the official protocol of VRU-Accident."""
    from copra_bench.vlm.inputs import single_token_ids

    ids = torch.tensor(single_token_ids(backbone.tokenizer, tuple(letters), backbone.name))
    context = contextlib.nullcontext() if adapter is None else adapter(as_clip_list(clips))
    with context:
        inputs = prepare_documents(backbone, messages, clips, fps)
        last = backbone.model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1, :]
    picked = last[:, ids.to(last.device)].float().argmax(dim=-1).tolist()
    return [letters[i] for i in picked]
