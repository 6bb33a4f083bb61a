"""The byte-level BPE tokenizer of the built-in tiny VLMs, built in code without any file.

The 256 byte tokens plus merges learned deterministically from the benchmark's prompts (so any text tokenizes, the
prompts stay short, ``"0"`` and ``"1"`` are single tokens), Qwen2-VL's special tokens and Qwen2-VL's chat template.
The per-family tiny models (:mod:`copra_bench.vlm.families`) wrap it in their real processors.
"""

from __future__ import annotations

import functools

__all__ = ["QWEN2_VL_CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_byte_tokenizer", "token_ids", "vocab_size"]

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


def token_ids(tokenizer) -> dict[str, int]:
    """Special token -> id (distinct, after the 256 byte tokens)."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    assert len(set(ids.values())) == len(ids) and min(ids.values()) >= 256, ids
    return ids


def vocab_size(tokenizer) -> int:
    """Embedding rows of a tiny model: ``len(tokenizer)`` rounded up to a multiple of 64."""
    return -(-len(tokenizer) // 64) * 64  # rows past the tokenizer are never produced by it
