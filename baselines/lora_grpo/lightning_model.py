"""Static LoRA + GRPO: one LoRA shared by every segment, trained with exactly COPRA's GRPO.

The paper's Table 3 control: same rewards, G, sampling, beta, epsilon, loss type and optimiser as COPRA (all from
:class:`~copra_bench.rl.method.GRPOMethod`), same LM target modules, rank and alpha; only the conditioning differs
(one LoRA for all inputs instead of one generated per segment). Separates "conditioning helps" from "GRPO helps".
The LoRA and its plumbing are LoRA SFT's: :class:`~copra_bench.adapters.StaticLoRAMethod`.
"""

from __future__ import annotations

from typing import Any

from copra_bench.adapters import StaticLoRAMethod
from copra_bench.rl.method import GRPOMethod


class StaticLoRAGRPO(StaticLoRAMethod, GRPOMethod):
    """One shared peft LoRA on the frozen VLM's language model, trained with GRPO on video labels.

    Args:
        lr: AdamW learning rate, linearly decayed to 0 (COPRA's default 1e-6 for 7B backbones).
        **kwargs: the LoRA settings ``rank`` (as COPRA's generated updates), ``alpha``, ``target_modules``,
            ``layers`` (:class:`~copra_bench.adapters.StaticLoRAMethod`), the GRPO settings
            (:class:`~copra_bench.rl.method.GRPOMethod`), the optimiser settings
            (:class:`~copra_bench.trained_module.TrainedModule`) and the backbone settings
            (:class:`~copra_bench.bench_module.BenchModule`).
    """

    method_name = "lora_grpo"

    def __init__(self, *, lr: float = 1e-6, **kwargs: Any) -> None:
        super().__init__(lr=lr, **kwargs)

    def grpo_adaptations(self, batch: dict):
        # One LoRA for every row: the rollouts and every iteration's loss run under the same (shared) adaptation.
        return self.adapter.adaptation, lambda iteration: self.adapter.adaptation
