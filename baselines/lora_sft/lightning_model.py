"""LoRA SFT: one peft LoRA on COPRA's target modules, trained with cross-entropy on the answer.

The LoRA (:class:`~copra_bench.adapters.StaticLoRA`) and its plumbing (scoring, export, counts, merged for test) are
shared with static LoRA + GRPO: :class:`~copra_bench.adapters.StaticLoRAMethod`.
"""

from __future__ import annotations

from typing import Any

from copra_bench.adapters import StaticLoRAMethod
from copra_bench.supervised_module import SupervisedMethod


class LoRASFT(StaticLoRAMethod, SupervisedMethod):
    """Supervised LoRA fine-tuning of the frozen VLM's language model on video labels (a static baseline).

    Args:
        lr: AdamW learning rate (LoRA SFT default 1e-4), linearly decayed to 0.
        **kwargs: the LoRA settings ``rank``, ``alpha``, ``target_modules``, ``layers``
            (:class:`~copra_bench.adapters.StaticLoRAMethod`), ``answer_loss``
            (:class:`~copra_bench.supervised_module.SupervisedMethod`), the optimiser settings
            (:class:`~copra_bench.trained_module.TrainedModule`) and the backbone settings
            (:class:`~copra_bench.bench_module.BenchModule`).
    """

    method_name = "lora_sft"

    def __init__(self, *, lr: float = 1e-4, **kwargs: Any) -> None:
        super().__init__(lr=lr, **kwargs)
