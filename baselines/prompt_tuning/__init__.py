"""Prompt-tuning baseline: a learned soft prompt, with the video's M-RoPE positions kept right."""

from copra_bench.baselines.prompt_tuning.lightning_model import PromptTuning
from copra_bench.baselines.prompt_tuning.torch_model import PromptTuningError, SoftPrompt

__all__ = ["PromptTuning", "PromptTuningError", "SoftPrompt"]
