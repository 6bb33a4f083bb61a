"""Built-in tiny VLMs: real transformers classes with random weights, built in code without any file.

They exist so that every part of the benchmark (scoring, generation, LoRA generators, GRPO, the Lightning
loops) can be tested on a CPU in seconds. Each builder returns ``(model, processor)``:

* the model is the real ``Qwen2VLForConditionalGeneration`` / ``Qwen2_5_VLForConditionalGeneration`` built from
  a tiny config (2 text layers, hidden 64, 2 vision blocks), weights drawn deterministically from ``seed``
  without touching the global RNG;
* the processor is a real ``Qwen2VLProcessor`` / ``Qwen2_5_VLProcessor`` (image + video processors with a small
  pixel budget, so 8 frames of 64x64 become 16 video tokens) around a byte-level BPE tokenizer built with
  ``tokenizers`` (the 256 byte tokens plus merges learned deterministically from the benchmark's prompts, so
  any text tokenizes, the prompts stay short, ``"0"`` and ``"1"`` are single tokens) plus Qwen2-VL's special
  tokens, and Qwen2-VL's chat template.

Both ``save_pretrained`` and reload offline with ``AutoModelForImageTextToText`` / ``AutoProcessor``.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

__all__ = [
    "BUILTIN_MODELS",
    "QWEN2_VL_CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "build_byte_tokenizer",
    "build_tiny_internvl",
    "build_tiny_qwen2_5_vl",
    "build_tiny_qwen2_vl",
    "build_tiny_qwen3_vl",
]

# Qwen2-VL-7B-Instruct's chat template (video/image placeholders, default system prompt when none is given).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Special tokens, appended after the byte tokens and the learned merges.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",  # pad
    "<|im_start|>",
    "<|im_end|>",  # eos
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_MAX_MERGES = 512

# Small pixel budget: a 64x64 frame becomes 56x56 = 4x4 patches of 14 -> 2x2 = 4 tokens per temporal patch.
_MIN_PIXELS = 28 * 28
_MAX_PIXELS = 56 * 56


def _merge_corpus() -> tuple[str, ...]:
    from .prompts import ANSWER_PREFIX, SYSTEM_PROMPT, USER_PROMPT

    return (
        SYSTEM_PROMPT,
        USER_PROMPT,
        f"system\nuser\nassistant\n{ANSWER_PREFIX}",
        "<think>The clip shows people walking normally on the street.</think><answer>0</answer>",
        "<think>A man is attacking another person in a store.</think><answer>1</answer>",
    )


@functools.lru_cache(maxsize=8)
def _learn_merges(texts: tuple[str, ...], max_merges: int) -> tuple[tuple[str, str], ...]:
    """Greedy byte-level BPE merges over ``texts``; ties broken lexicographically, so fully deterministic.

    They only shorten the byte sequences of the benchmark's prompts (about 5x), which keeps the tiny model fast;
    any other text still tokenizes, byte by byte where no merge applies.
    """
    from collections import Counter

    from tokenizers import pre_tokenizers

    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    words: Counter = Counter()
    for text in texts:
        for word, _ in pre.pre_tokenize_str(text):
            words[tuple(word)] += 1
    merges: list[tuple[str, str]] = []
    for _ in range(max_merges):
        pairs: Counter = Counter()
        for symbols, count in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        new_words: Counter = Counter()
        for symbols, count in words.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            new_words[tuple(out)] += count
        words = new_words
    return tuple(merges)


def build_byte_tokenizer(extra_special_tokens: dict[str, str] | None = None):
    """Byte-level BPE tokenizer (the 256 byte tokens + merges learned from the benchmark prompts) with
    Qwen2-VL's special tokens. Any text tokenizes; ``"0"`` and ``"1"`` are single tokens (ids 48 and 49).

    ``extra_special_tokens`` (attribute name -> token, e.g. InternVL's ``{"start_image_token": "<img>"}``) are
    added after Qwen2-VL's and exposed as tokenizer attributes (``tokenizer.start_image_token_id`` ...)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    # GPT-2's bytes_to_unicode order: sort by the byte each character stands for so ids equal byte values.
    byte_chars = sorted(alphabet, key=_byte_of_char)
    vocab = {ch: i for i, ch in enumerate(byte_chars)}
    merges = _learn_merges(_merge_corpus(), _MAX_MERGES)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=list(merges), fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    extra = dict(extra_special_tokens or {})
    tok.add_special_tokens(list(SPECIAL_TOKENS) + [t for t in extra.values() if t not in SPECIAL_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
        **({"extra_special_tokens": extra} if extra else {}),
    )
    fast.chat_template = QWEN2_VL_CHAT_TEMPLATE
    return fast


def _byte_of_char(ch: str) -> int:
    # GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to 256 + n in order.
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    code = ord(ch)
    if code in printable:
        return code
    others = [b for b in range(256) if b not in printable]
    return others[code - 256]


def _token_ids(tokenizer) -> dict[str, int]:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    assert len(set(ids.values())) == len(ids) and min(ids.values()) >= 256, ids
    return ids


def _vocab_size(tokenizer) -> int:
    return -(-len(tokenizer) // 64) * 64  # rows past the tokenizer are never produced by it


def _text_config(ids: dict[str, int], vocab_size: int) -> dict:
    return dict(
        vocab_size=vocab_size,
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


def _qwen_media_processors(patch_size: int = 14):
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    common = dict(patch_size=patch_size, temporal_patch_size=2, merge_size=2)
    image_processor = Qwen2VLImageProcessor(min_pixels=_MIN_PIXELS, max_pixels=_MAX_PIXELS, **common)
    # The caller samples the K frames itself: never let the video processor resample them.
    video_processor = Qwen2VLVideoProcessor(
        min_pixels=_MIN_PIXELS, max_pixels=_MAX_PIXELS, do_sample_frames=False, cap_pixels_per_frame=False, **common
    )
    return image_processor, video_processor


def _qwen_token_config(ids: dict[str, int]) -> dict:
    return dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def _build(model_cls, config, seed: int, attn_implementation: str | None):
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


def build_tiny_qwen2_vl(seed: int = 0, attn_implementation: str | None = None):
    """Tiny ``Qwen2VLForConditionalGeneration`` + real ``Qwen2VLProcessor``; deterministic in ``seed``."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    tokenizer = build_byte_tokenizer()
    ids = _token_ids(tokenizer)
    config = Qwen2VLConfig(
        text_config=_text_config(ids, _vocab_size(tokenizer)),
        vision_config=dict(
            depth=2,
            embed_dim=64,
            hidden_size=64,  # merger output = text hidden size
            mlp_ratio=2,
            num_heads=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        **_qwen_token_config(ids),
    )
    model = _build(Qwen2VLForConditionalGeneration, config, seed, attn_implementation)
    image_processor, video_processor = _qwen_media_processors()
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    return model, processor


def build_tiny_qwen2_5_vl(seed: int = 0, attn_implementation: str | None = None):
    """Tiny ``Qwen2_5_VLForConditionalGeneration`` + real ``Qwen2_5_VLProcessor``; deterministic in ``seed``."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    tokenizer = build_byte_tokenizer()
    ids = _token_ids(tokenizer)
    config = Qwen2_5_VLConfig(
        text_config=_text_config(ids, _vocab_size(tokenizer)),
        vision_config=dict(
            depth=2,
            hidden_size=64,
            intermediate_size=128,
            out_hidden_size=64,  # merger output = text hidden size
            num_heads=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
            fullatt_block_indexes=[1],
            tokens_per_second=2,
        ),
        **_qwen_token_config(ids),
    )
    model = _build(Qwen2_5_VLForConditionalGeneration, config, seed, attn_implementation)
    image_processor, video_processor = _qwen_media_processors()
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    return model, processor


def build_tiny_qwen3_vl(seed: int = 0, attn_implementation: str | None = None):
    """Tiny ``Qwen3VLForConditionalGeneration`` (patch 16, deepstack) + real ``Qwen3VLProcessor``."""
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    tokenizer = build_byte_tokenizer()
    ids = _token_ids(tokenizer)
    text = _text_config(ids, _vocab_size(tokenizer))
    text.update(head_dim=16)
    text["rope_parameters"] = dict(text["rope_parameters"], mrope_interleaved=True)
    config = Qwen3VLConfig(
        text_config=text,
        vision_config=dict(
            depth=2,
            hidden_size=64,
            intermediate_size=128,
            out_hidden_size=64,
            num_heads=2,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            num_position_embeddings=64,
            deepstack_visual_indexes=[1],
        ),
        **_qwen_token_config(ids),
    )
    model = _build(Qwen3VLForConditionalGeneration, config, seed, attn_implementation)
    common = dict(patch_size=16, temporal_patch_size=2, merge_size=2)
    image_processor = Qwen2VLImageProcessor(min_pixels=32 * 32, max_pixels=64 * 64, **common)
    # Qwen3-VL's video pixel budget counts all frames: 8 frames of 64x64 keep their size (16 tokens).
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": 8 * 32 * 32, "longest_edge": 8 * 64 * 64}, do_sample_frames=False, **common
    )
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    return model, processor


_INTERNVL_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
    "image_token": "<image>",
}
INTERNVL_CHAT_TEMPLATE = QWEN2_VL_CHAT_TEMPLATE.replace(
    "<|vision_start|><|video_pad|><|vision_end|>", "<video>\n"
).replace("<|vision_start|><|image_pad|><|vision_end|>", "<image>\n")


def build_tiny_internvl(seed: int = 0, attn_implementation: str | None = None):
    """Tiny transformers-native ``InternVLForConditionalGeneration`` (InternVL3-hf layout: InternViT + pixel
    shuffle + MLP projector + Qwen2 LM) + real ``InternVLProcessor``; each frame is one 56x56 tile -> 4 tokens."""
    from transformers import GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration
    from transformers import InternVLProcessor, InternVLVideoProcessor

    tokenizer = build_byte_tokenizer(_INTERNVL_TOKENS)
    ids = _token_ids(tokenizer)
    text = _text_config(ids, _vocab_size(tokenizer))
    text.pop("rope_parameters")
    config = InternVLConfig(
        vision_config=dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            image_size=[56, 56],
            patch_size=[14, 14],
        ),
        text_config=dict(text, model_type="qwen2"),
        image_token_id=tokenizer.context_image_token_id,
        image_seq_length=4,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )
    model = _build(InternVLForConditionalGeneration, config, seed, attn_implementation)
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size={"height": 56, "width": 56}, crop_to_patches=False),
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(size={"height": 56, "width": 56}, do_sample_frames=False),
        image_seq_length=4,
        chat_template=INTERNVL_CHAT_TEMPLATE,
    )
    return model, processor


#: Built-in model names -> builder ``(seed=0, attn_implementation=None) -> (model, processor)``.
BUILTIN_MODELS: dict[str, Callable[..., tuple]] = {
    "tiny-qwen2-vl": build_tiny_qwen2_vl,
    "tiny-qwen2.5-vl": build_tiny_qwen2_5_vl,
    "tiny-qwen3-vl": build_tiny_qwen3_vl,
    "tiny-internvl": build_tiny_internvl,
}
