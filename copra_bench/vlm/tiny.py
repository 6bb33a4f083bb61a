"""Building blocks of the built-in tiny VLMs: real transformers classes with random weights, built in code.

They exist so that every part of the benchmark (scoring, generation, LoRA generators, GRPO, the Lightning
loops) can be tested on a CPU in seconds. Each family module (:mod:`copra_bench.vlm.families`) builds its own,
``build_tiny(seed=0, attn_implementation=None) -> (model, processor)``, from the helpers here; the names they are
loaded by are ``copra_bench.vlm.BUILTIN_MODELS`` (``"tiny-qwen2-vl"`` ...):

* the model is the family's real ``*ForConditionalGeneration`` class built from a tiny config (2 text layers,
  hidden 64, 2 vision blocks), weights drawn deterministically from ``seed`` without touching the global RNG;
* the processor is the family's real processor (image + video processors with a small pixel budget, so 8 frames of
  64x64 become 16 video tokens) around the byte-level BPE tokenizer of :mod:`copra_bench.vlm.tiny_tokenizer`.

Both ``save_pretrained`` and reload offline with ``AutoModelForImageTextToText`` / ``AutoProcessor``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .tiny_tokenizer import QWEN2_VL_CHAT_TEMPLATE, build_byte_tokenizer, token_ids, vocab_size

__all__ = [
    "build_random_model",
    "build_tiny_qwen",
    "qwen_media_processors",
    "qwen_token_config",
    "text_config",
]

# Small pixel budget: a 64x64 frame becomes 56x56 = 4x4 patches of 14 -> 2x2 = 4 tokens per temporal patch.
_MIN_PIXELS = 28 * 28
_MAX_PIXELS = 56 * 56


def text_config(tokenizer) -> dict:
    """The tiny Qwen2-style LM: 2 layers, hidden 64, 4 heads (2 KV heads), M-RoPE sections for head dim 16."""
    ids = token_ids(tokenizer)
    return dict(
        vocab_size=vocab_size(tokenizer),
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )


def qwen_media_processors(patch_size: int = 14):
    """Qwen2-VL image and video processors with the small pixel budget (the video processor never resamples)."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    common = dict(patch_size=patch_size, temporal_patch_size=2, merge_size=2)
    image_processor = Qwen2VLImageProcessor(min_pixels=_MIN_PIXELS, max_pixels=_MAX_PIXELS, **common)
    # The caller samples the K frames itself: never let the video processor resample them.
    video_processor = Qwen2VLVideoProcessor(
        min_pixels=_MIN_PIXELS, max_pixels=_MAX_PIXELS, do_sample_frames=False, cap_pixels_per_frame=False, **common
    )
    return image_processor, video_processor


def qwen_token_config(ids: dict[str, int]) -> dict:
    """The vision token ids of a Qwen-VL config (from :func:`~copra_bench.vlm.tiny_tokenizer.token_ids`)."""
    return dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def build_random_model(model_cls, config, seed: int, attn_implementation: str | None):
    """``model_cls(config)`` in eval mode, weights from a private RNG seeded with ``seed``; the generation config
    takes the text config's special ids."""
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    # Weights come from a private RNG state: the global torch RNG is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = model_cls(config)
    model.eval()
    text = config.get_text_config()
    gen = model.generation_config
    gen.eos_token_id = text.eos_token_id
    gen.pad_token_id = text.pad_token_id
    gen.bos_token_id = text.bos_token_id
    return model


def tiny_qwen_builder(class_names: tuple[str, str, str], vision_config: dict[str, Any], **options: Any
                      ) -> Callable[..., tuple]:
    """The ``build_tiny(seed=0, attn_implementation=None)`` of a Qwen-VL family from the names of its transformers
    ``(config, model, processor)`` classes and its tiny vision config (imported when a model is built)."""
    def build_tiny(seed: int = 0, attn_implementation: str | None = None):
        import transformers

        classes = tuple(getattr(transformers, name) for name in class_names)
        return build_tiny_qwen(classes, vision_config, seed, attn_implementation, **options)

    build_tiny.__doc__ = f"Tiny ``{class_names[1]}`` + real ``{class_names[2]}``; deterministic in ``seed``."
    return build_tiny


def build_tiny_qwen(classes: tuple[type, type, type], vision_config: dict[str, Any], seed: int,
                    attn_implementation: str | None, *, text_config_of: Callable[[Any], dict] = text_config,
                    media_processors: tuple[Any, Any] | None = None):
    """``(model, processor)`` of a tiny Qwen-VL family from its ``(config, model, processor)`` classes: the byte
    tokenizer, :func:`text_config_of` the tokenizer, ``vision_config``, the Qwen vision token ids, and the image and
    video processors (default :func:`qwen_media_processors`) with Qwen2-VL's chat template."""
    config_cls, model_cls, processor_cls = classes
    tokenizer = build_byte_tokenizer()
    config = config_cls(text_config=text_config_of(tokenizer), vision_config=vision_config,
                        **qwen_token_config(token_ids(tokenizer)))
    model = build_random_model(model_cls, config, seed, attn_implementation)
    image_processor, video_processor = media_processors or qwen_media_processors()
    processor = processor_cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                              chat_template=QWEN2_VL_CHAT_TEMPLATE)
    return model, processor

