"""Methods COPRA is compared against, one folder each (plain ``nn.Module`` apart from the LightningModule).

* :mod:`~copra_bench.baselines.frozen` — the frozen VLM, zero-shot;
* :mod:`~copra_bench.baselines.prompt_tuning` — a learned soft prompt (cross-entropy on the answer);
* :mod:`~copra_bench.baselines.lora_sft` — one LoRA on COPRA's target modules (cross-entropy on the answer);
* :mod:`~copra_bench.baselines.lora_grpo` — one LoRA trained with COPRA's GRPO (the paper's Table 3 control).
"""

from typing import Any

from copra_bench.baselines.frozen import FrozenVLM

__all__ = ["FrozenVLM", "LoRASFT", "PromptTuning", "StaticLoRAGRPO"]

_LAZY = {"LoRASFT": "lora_sft", "PromptTuning": "prompt_tuning", "StaticLoRAGRPO": "lora_grpo"}


def __getattr__(name: str) -> Any:
    # Imported on first use: the trained baselines pull in peft and the GRPO engine, which the frozen one does not need.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"copra_bench.baselines.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
