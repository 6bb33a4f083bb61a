"""Vision-language backbones: one interface over transformers VLMs (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, InternVL-hf)."""

from .backbone import BackboneError, ScoreOutput, VLMBackbone
from .families import (
    BUILTIN_MODELS,
    SUPPORTED_FAMILIES,
    VLMFamily,
    family_of,
    register_family,
    registered_families,
)
from .prompts import ANSWER_PREFIX, FORMAT_REGEX, SYSTEM_PROMPT, USER_PROMPT, format_reward, parse_answer

__all__ = [
    "ANSWER_PREFIX",
    "BUILTIN_MODELS",
    "BackboneError",
    "FORMAT_REGEX",
    "SUPPORTED_FAMILIES",
    "SYSTEM_PROMPT",
    "ScoreOutput",
    "USER_PROMPT",
    "VLMBackbone",
    "VLMFamily",
    "family_of",
    "format_reward",
    "parse_answer",
    "register_family",
    "registered_families",
]
