"""Token-level access to a :class:`~copra_bench.vlm.backbone.VLMBackbone` for policy-gradient training.

:meth:`VLMBackbone.generate` returns strings; GRPO needs the sampled token ids, their end-of-sequence mask, and a
second differentiable forward over prompt + completion that returns the completion tokens' log-probabilities.

* :func:`expand_inputs` repeats each input's processor outputs ``repeats`` times consecutively (input-major rows,
  as ``generate(num_return_sequences=G)``), pixel tensors included, for every supported family: Qwen-VL's
  flattened ``pixel_values_videos`` are split per video by ``video_grid_thw``, InternVL's per-frame tiles by frame
  counts. Generation and log-prob forwards then see exactly the same B * G rows.
* :func:`sample_completions` samples from the rows (no grad) and returns ids, mask and optionally raw logits.
* :func:`completion_logprobs` runs the model on prompt + completion and returns per-token log-probs of the
  completion, computing logits for the completion positions only (``logits_to_keep``).
"""

from __future__ import annotations

from typing import Any

import torch

from .backbone import BackboneError, VLMBackbone

__all__ = [
    "NonFiniteLogitsError",
    "completion_logprobs",
    "completion_mask",
    "expand_inputs",
    "pad_completions",
    "placeholder_token_ids",
    "sample_completions",
    "select_rows",
    "selective_log_softmax",
    "shared_vision_outputs",
]


class NonFiniteLogitsError(BackboneError):
    """Sampling met NaN/inf next-token logits (e.g. a diverged adaptation); ``rows`` are the offending rows."""

    def __init__(self, message: str, rows: list[int]) -> None:
        super().__init__(message)
        self.rows = rows


class _NonFiniteGuard:
    """Logits processor recording rows whose scores are not finite and making them uniform, so that sampling
    finishes and the caller can name the rows instead of failing inside ``torch.multinomial``."""

    def __init__(self) -> None:
        self.rows: set[int] = set()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        bad = torch.isnan(scores).any(dim=-1) | torch.isposinf(scores).any(dim=-1) | torch.isneginf(scores).all(dim=-1)
        if bool(bad.any()):
            self.rows.update(bad.nonzero().flatten().tolist())
            scores = torch.where(bad.unsqueeze(-1), torch.zeros_like(scores), scores)
        return scores


def expand_inputs(inputs, frames: list[int], repeats: int) -> dict[str, Any]:
    """Processor outputs for B inputs -> the same for B * ``repeats`` rows, each input repeated consecutively.

    Args:
        inputs: the ``BatchFeature`` / dict from :meth:`VLMBackbone.prepare_inputs` (B rows).
        frames: the number of frames of each input (to split per-frame pixel tensors).
        repeats: copies per input.
    """
    items = dict(inputs)
    if repeats == 1:
        return items
    batch = int(items["input_ids"].shape[0])
    per_video_sizes: dict[str, list[int]] = {}
    if "video_grid_thw" in items:
        per_video_sizes["pixel_values_videos"] = items["video_grid_thw"].prod(-1).tolist()
    if "image_grid_thw" in items:
        per_video_sizes["pixel_values"] = items["image_grid_thw"].prod(-1).tolist()
    out: dict[str, Any] = {}
    for key, value in items.items():
        if not isinstance(value, torch.Tensor):
            out[key] = value
            continue
        sizes = per_video_sizes.get(key)
        if sizes is None and value.dim() > 0 and value.shape[0] == batch:
            out[key] = value.repeat_interleave(repeats, dim=0)
            continue
        if sizes is None and value.dim() > 0 and value.shape[0] == sum(frames) and len(frames) == batch:
            sizes = frames  # one tile per frame (InternVL video frames)
        if sizes is None or sum(sizes) != value.shape[0]:
            raise BackboneError(
                f"cannot repeat processor output {key!r} of shape {tuple(value.shape)} per input "
                f"(batch {batch}, frames {frames}); extend copra_bench/vlm/sequences.py:expand_inputs"
            )
        chunks = torch.split(value, sizes, dim=0)
        out[key] = torch.cat([chunk for chunk in chunks for _ in range(repeats)], dim=0)
    return out


def select_rows(inputs, start: int, stop: int, row_frames: list[int] | None = None) -> dict[str, Any]:
    """Rows ``[start, stop)`` of processor outputs (or of :func:`shared_vision_outputs`), pixel tensors included:
    Qwen-VL's flattened patches by ``*_grid_thw``, per-frame tiles by ``row_frames`` (the frame count of every
    row; None = the same for every row, as InternVL batches are). All rows: the inputs themselves."""
    items = dict(inputs)
    if "input_ids" not in items:  # shared vision outputs: {"video": BaseModelOutputWithPooling(pooler_output)}
        return {k: type(v)(pooler_output=tuple(v.pooler_output[start:stop])) for k, v in items.items()}
    rows = int(items["input_ids"].shape[0])
    if start == 0 and stop >= rows:
        return items
    sizes: dict[str, list[int]] = {}
    if "video_grid_thw" in items:
        sizes["pixel_values_videos"] = items["video_grid_thw"].prod(-1).tolist()
    if "image_grid_thw" in items:
        sizes["pixel_values"] = items["image_grid_thw"].prod(-1).tolist()
    out: dict[str, Any] = {}
    for key, value in items.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            out[key] = value
        elif key in sizes:
            offsets = [0, *torch.tensor(sizes[key]).cumsum(0).tolist()]
            out[key] = value[offsets[start] : offsets[stop]]
        elif value.shape[0] == rows:
            out[key] = value[start:stop]
        elif row_frames is not None and value.shape[0] == sum(row_frames):
            offsets = [0, *torch.tensor(row_frames).cumsum(0).tolist()]
            out[key] = value[offsets[start] : offsets[stop]]
        elif value.shape[0] % rows == 0:  # the same number of frame tiles per row
            per_row = value.shape[0] // rows
            out[key] = value[start * per_row : stop * per_row]
        else:
            raise BackboneError(f"cannot select rows of processor output {key!r} of shape {tuple(value.shape)} "
                                f"({rows} rows); extend copra_bench/vlm/sequences.py:select_rows")
    return out


def pad_completions(parts: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate ``(ids [n_i, T_i], mask [n_i, T_i])`` chunks of completions, right-padded to the longest
    (pad ``pad_id``, mask 0)."""
    if len(parts) == 1:
        return parts[0]
    length = max(int(ids.shape[1]) for ids, _ in parts)
    ids = torch.cat([torch.nn.functional.pad(i, (0, length - i.shape[1]), value=pad_id) for i, _ in parts])
    mask = torch.cat([torch.nn.functional.pad(m, (0, length - m.shape[1]), value=0.0) for _, m in parts])
    return ids, mask


def placeholder_token_ids(backbone: VLMBackbone) -> list[int]:
    """Ids of the vision placeholder / delimiter tokens (``<|video_pad|>``, ``<|vision_start|>``, InternVL's
    ``<IMG_CONTEXT>`` ...). They are never sampled: a completion holding one would be read as a slot for vision
    features in the log-prob forward (and fail), and an instruction-tuned model gives them ~0 probability anyway.
    :func:`completion_logprobs` removes them from the distribution too, so sampling and scoring agree exactly."""
    cfg = backbone.model.config
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
             "image_token_index", "video_token_index")
    ids = {int(getattr(cfg, n)) for n in names if isinstance(getattr(cfg, n, None), int)}
    tok = backbone.tokenizer
    for attr in ("start_image_token_id", "end_image_token_id", "context_image_token_id", "video_token_id"):
        if isinstance(getattr(tok, attr, None), int):
            ids.add(int(getattr(tok, attr)))
    return sorted(ids)


@torch.no_grad()
def shared_vision_outputs(backbone: VLMBackbone, inputs, repeats: int) -> dict[str, Any] | None:
    """Vision-encoder outputs of the B inputs, computed once and repeated per row, for the ``mm_encoder_outputs``
    argument of the model's forward: the B * G-row log-prob forwards then skip the vision encoder, which is frozen
    and (for COPRA and LM-only LoRA) not adapted. None where the family does not support it
    (:attr:`VLMFamily.reuses_vision_outputs <copra_bench.vlm.families.VLMFamily.reuses_vision_outputs>` is False:
    Qwen3-VL's deepstack features, InternVL): those forwards then encode the repeated pixels themselves."""
    if not backbone.reuses_vision_outputs(inputs):
        return None
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    out = backbone.model.get_video_features(
        pixel_values_videos=inputs["pixel_values_videos"], video_grid_thw=inputs["video_grid_thw"]
    )
    pooled = tuple(t for t in out.pooler_output for _ in range(repeats))
    return {"video": BaseModelOutputWithPooling(pooler_output=pooled)}


def completion_mask(completion_ids: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """``[N, T]`` float mask: 1 up to and including the first end-of-sequence token of each row, 0 after it."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0  # strictly after the first EOS
    return (~after_eos).float()


@torch.no_grad()
def sample_completions(
    backbone: VLMBackbone,
    inputs: dict[str, Any],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    return_logits: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Sample one completion per row of ``inputs`` (already expanded). Same sampling settings as
    :meth:`VLMBackbone.generate` (explicit, overriding the checkpoint's ``generation_config``; global torch RNG).

    Raises:
        NonFiniteLogitsError: some rows had NaN/inf logits (named in ``rows``).

    Returns:
        ``(completion_ids [N, T], mask [N, T], logits [N, T, V] or None)``; logits are the raw (unprocessed)
        next-token logits of each decoding step when ``return_logits``. Vision placeholder tokens
        (:func:`placeholder_token_ids`) are never sampled.
    """
    from transformers import LogitsProcessorList

    tok = backbone.tokenizer
    eos = backbone.eos_token_ids
    guard = _NonFiniteGuard()
    out = backbone.model.generate(
        **inputs,
        max_new_tokens=int(max_new_tokens),
        do_sample=True,
        temperature=float(temperature),
        top_k=int(top_k),
        top_p=float(top_p),
        num_return_sequences=1,
        pad_token_id=tok.pad_token_id,
        eos_token_id=eos,
        repetition_penalty=1.0,
        suppress_tokens=placeholder_token_ids(backbone),
        return_dict_in_generate=True,
        output_logits=bool(return_logits),
        logits_processor=LogitsProcessorList([guard]),
    )
    if guard.rows:
        rows = sorted(guard.rows)
        raise NonFiniteLogitsError(f"non-finite next-token logits while sampling rows {rows}", rows)
    completion_ids = out.sequences[:, inputs["input_ids"].shape[1] :]
    logits = torch.stack(out.logits, dim=1) if return_logits else None
    return completion_ids, completion_mask(completion_ids, eos), logits


def completion_logprobs(
    backbone: VLMBackbone,
    inputs: dict[str, Any],
    completion_ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    vision_outputs: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Per-token log-probs ``[N, T]`` float32 of ``completion_ids`` after the (expanded, left-padded) prompts.

    One forward over prompt + completion with logits for the last T + 1 positions only; the logits are divided by
    ``temperature`` (the sampling distribution, as TRL) and the vision placeholder tokens, never sampled, are
    removed (:func:`placeholder_token_ids`). Positions after the end of a completion (mask 0) hold
    finite but meaningless values. Differentiable when grad is enabled (the backbone itself is frozen).
    ``vision_outputs`` (from :func:`shared_vision_outputs`) replace the pixel inputs.
    """
    n, length = completion_ids.shape
    ids = torch.cat([inputs["input_ids"], completion_ids.to(inputs["input_ids"].device)], dim=1)
    attention = torch.cat([inputs["attention_mask"], mask.to(inputs["attention_mask"])], dim=1)
    model_inputs = dict(inputs, input_ids=ids, attention_mask=attention)
    if "mm_token_type_ids" in inputs:
        types = inputs["mm_token_type_ids"]
        model_inputs["mm_token_type_ids"] = torch.cat([types, types.new_zeros(n, length)], dim=1)
    if vision_outputs is not None:
        model_inputs.pop("pixel_values_videos", None)
        model_inputs["mm_encoder_outputs"] = dict(vision_outputs)
    out = backbone.model(**model_inputs, logits_to_keep=length + 1, use_cache=False)
    suppressed = placeholder_token_ids(backbone)
    suppressed_ids = torch.tensor(suppressed, device=out.logits.device) if suppressed else None
    targets = completion_ids.to(out.logits.device)
    rows = []
    # One completion at a time in float32: the whole [N, T, vocab] in float32 would be ~2.5 GB for 64 rollouts of
    # 64 tokens over Qwen2's 152k vocabulary, and each of scaling / masking / normalising would copy it again.
    for row, target in zip(out.logits[:, :-1, :], targets, strict=True):
        row = row.float()
        if temperature != 1.0:
            row = row / temperature
        if suppressed_ids is not None:
            row = row.index_fill(-1, suppressed_ids, float("-inf"))
        rows.append(selective_log_softmax(row.unsqueeze(0), target.unsqueeze(0))[0])
    return torch.stack(rows)


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits, -1).gather(-1, index)`` without materialising the full log-softmax (TRL's trick):
    ``logit[index] - logsumexp(logits)``, row by row to bound the memory of the logsumexp temporaries."""
    picked = logits.gather(-1, index.unsqueeze(-1)).squeeze(-1)
    norm = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
    return picked - norm
