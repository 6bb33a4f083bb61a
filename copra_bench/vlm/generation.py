"""Text generation of :meth:`VLMBackbone.generate`: explicit ``generate()`` settings, decoding, and the
end-of-sequence ids (shared with GRPO's :func:`~copra_bench.vlm.sequences.sample_completions`)."""

from __future__ import annotations

from typing import Any

__all__ = ["decoded_completions", "eos_token_ids", "generation_kwargs"]


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The end-of-sequence ids: the generation config's (one or a list) and the tokenizer's, without repeats."""
    ids: list[int] = []
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    for value in (gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos]) + [tokenizer.eos_token_id]:
        if value is not None and int(value) not in ids:
            ids.append(int(value))
    return ids


def generation_kwargs(model: Any, tokenizer: Any, *, max_new_tokens: int, do_sample: bool, temperature: float,
                      num_return_sequences: int, top_k: int | None, top_p: float,
                      repetition_penalty: float) -> dict[str, Any]:
    """Explicit ``generate()`` settings, overriding the checkpoint's ``generation_config`` (``top_k=None``: no
    top-k; sampling settings only when ``do_sample``)."""
    kwargs: dict[str, Any] = dict(
        max_new_tokens=int(max_new_tokens),
        do_sample=bool(do_sample),
        num_return_sequences=int(num_return_sequences),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_token_ids(model, tokenizer),
        repetition_penalty=float(repetition_penalty),
    )
    if do_sample:
        kwargs.update(temperature=float(temperature), top_k=0 if top_k is None else int(top_k), top_p=float(top_p))
    return kwargs


def decoded_completions(model: Any, tokenizer: Any, inputs: Any, **settings: Any) -> list[str]:
    """``model.generate`` on prepared ``inputs`` with :func:`generation_kwargs` ``settings``; the completions
    decoded (prompt removed, special tokens skipped), those of one input consecutive."""
    out = model.generate(**inputs, **generation_kwargs(model, tokenizer, **settings))
    sequences = out.sequences if hasattr(out, "sequences") else out
    completions = sequences[:, inputs["input_ids"].shape[1] :]
    return tokenizer.batch_decode(completions, skip_special_tokens=True, clean_up_tokenization_spaces=False)
