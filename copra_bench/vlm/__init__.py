"""Vision-language backbones: one interface over transformers VLMs (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, InternVL-hf)."""

from .backbone import SUPPORTED_FAMILIES, BackboneError, ScoreOutput, VLMBackbone
from .prompts import ANSWER_PREFIX, FORMAT_REGEX, SYSTEM_PROMPT, USER_PROMPT, format_reward, parse_answer
from .tiny import BUILTIN_MODELS

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
    "format_reward",
    "parse_answer",
]
