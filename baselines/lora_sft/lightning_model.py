"""LoRA SFT: one peft LoRA on COPRA's target modules, trained with cross-entropy on the answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from copra_bench.baselines.lora_sft.torch_model import StaticLoRA

from copra_bench.copra.layout import ALL_TARGETS
from copra_bench.supervised_module import SupervisedMethod


class MergedForTest:
    """Merges the method's :class:`StaticLoRA` (``self.adapter``) into the base weights for test and predict, so
    that a static LoRA is scored at the frozen model's cost (unmerged peft LoRA costs ~1.3x forward and ~2.5x
    generate on a 7B model), and unmerges it afterwards. Validation during fit runs unmerged."""

    adapter: StaticLoRA

    def on_test_epoch_start(self) -> None:
        self.adapter.merge()
        super().on_test_epoch_start()

    def on_test_epoch_end(self) -> None:
        try:
            super().on_test_epoch_end()
        finally:
            self.adapter.unmerge()

    def on_predict_epoch_start(self) -> None:
        self.adapter.merge()
        super().on_predict_epoch_start()

    def on_predict_epoch_end(self) -> None:
        try:
            super().on_predict_epoch_end()
        finally:
            self.adapter.unmerge()

    def parameter_counts(self) -> dict[str, int]:
        return {**super().parameter_counts(), "lora_values": self.adapter.num_values()}


class LoRASFT(MergedForTest, SupervisedMethod):
    """Supervised LoRA fine-tuning of the frozen VLM's language model on video labels (a static baseline).

    Args:
        rank: LoRA rank r (COPRA's default: 8).
        alpha: LoRA alpha (scale = alpha / rank).
        target_modules: LM Linear layers adapted: any of q, k, v, o, gate, up, down (the same modules as COPRA;
            never the vision tower).
        layers: LM decoder layer indices (``None``: all).
        lr: AdamW learning rate (LoRA SFT default 1e-4), linearly decayed to 0.
        **kwargs: ``answer_loss`` (:class:`~copra_bench.supervised_module.SupervisedMethod`), the optimiser
            settings (:class:`~copra_bench.trained_module.TrainedModule`) and the backbone settings
            (:class:`~copra_bench.bench_module.BenchModule`).
    """

    method_name = "lora_sft"

    def __init__(self, *, rank: int = 8, alpha: float = 16.0, target_modules: Sequence[str] = ALL_TARGETS,
                 layers: Sequence[int] | None = None, lr: float = 1e-4, **kwargs: Any) -> None:
        super().__init__(lr=lr, **kwargs)
        self.adapter = StaticLoRA(self.backbone, rank=rank, alpha=alpha, target_modules=list(target_modules),
                                  layers=None if layers is None else list(layers))
