"""Static LoRA + GRPO: one LoRA shared by every segment, trained with exactly COPRA's GRPO.

The paper's Table 3 control: same rewards, G, sampling, beta, epsilon, loss type and optimiser as COPRA (all from
:class:`~copra_bench.rl.method.GRPOMethod`), same LM target modules, rank and alpha; only the conditioning differs
(one LoRA for all inputs instead of one generated per segment). Separates "conditioning helps" from "GRPO helps".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from copra_bench.baselines.lora_sft.lightning_model import MergedForTest
from copra_bench.baselines.lora_sft.torch_model import StaticLoRA

from copra_bench.copra.layout import ALL_TARGETS
from copra_bench.rl.method import GRPOMethod
from copra_bench.vlm import ScoreOutput


class StaticLoRAGRPO(MergedForTest, GRPOMethod):
    """One shared peft LoRA on the frozen VLM's language model, trained with GRPO on video labels.

    Args:
        rank: LoRA rank r (as COPRA's generated updates).
        alpha: LoRA alpha (scale = alpha / rank).
        target_modules: LM Linear layers adapted: any of q, k, v, o, gate, up, down.
        layers: LM decoder layer indices (``None``: all).
        lr: AdamW learning rate, linearly decayed to 0 (COPRA's default 1e-6 for 7B backbones).
        **kwargs: GRPO settings (:class:`~copra_bench.rl.method.GRPOMethod`), optimiser settings
            (:class:`~copra_bench.trained_module.TrainedModule`) and backbone settings
            (:class:`~copra_bench.bench_module.BenchModule`).
    """

    method_name = "lora_grpo"

    def __init__(self, *, rank: int = 8, alpha: float = 16.0, target_modules: Sequence[str] = ALL_TARGETS,
                 layers: Sequence[int] | None = None, lr: float = 1e-6, **kwargs: Any) -> None:
        super().__init__(lr=lr, **kwargs)
        self.adapter = StaticLoRA(self.backbone, rank=rank, alpha=alpha, target_modules=list(target_modules),
                                  layers=None if layers is None else list(layers))

    def trainable_parameters(self) -> list:
        return self.adapter.lora_parameters()

    def export_trained(self, directory: Path) -> Path:
        return self.adapter.save_pretrained(directory)

    def score_windows(self, frames: Any) -> ScoreOutput:
        with self.adapter.adaptation(1):
            return self.backbone.score(frames, return_features=self.keep_features)

    def grpo_adaptations(self, batch: dict):
        # One LoRA for every row: the rollouts and every iteration's loss run under the same (shared) adaptation.
        return self.adapter.adaptation, lambda iteration: self.adapter.adaptation
