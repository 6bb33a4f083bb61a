"""What a benchmark method holding a :class:`StaticAdapter` (``self.adapter``) shares, written once.

Mixins for :class:`~copra_bench.bench_module.BenchModule` subclasses, placed before the base in the class list:

* :class:`AdaptedMethod` — scoring under the adapter, its trainable tensors, its export and its size in the logged
  parameter counts (prompt tuning, LoRA SFT, static LoRA + GRPO);
* :class:`MergedForTest` — a mergeable adapter merged into the base weights for test and predict;
* :class:`StaticLoRAMethod` — both, with a :class:`StaticLoRA` built from the method's LoRA settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from copra_bench.vlm import ScoreOutput
from copra_bench.vlm.families import ALL_TARGETS

from .base import StaticAdapter
from .lora import StaticLoRA

__all__ = ["AdaptedMethod", "MergedForTest", "StaticLoRAMethod"]


class AdaptedMethod:
    """A method whose trained state is ``self.adapter``: scores under it, trains, exports and counts it."""

    adapter: StaticAdapter

    def trainable_parameters(self) -> list:
        return self.adapter.trainable_parameters()

    def export_trained(self, directory: Path) -> Path:
        return self.adapter.save_pretrained(directory)

    def score_windows(self, frames: Any) -> ScoreOutput:
        with self.adapter.adaptation(1):
            return self.backbone.score(frames, return_features=self.keep_features)

    def parameter_counts(self) -> dict[str, int]:
        return {**super().parameter_counts(), self.adapter.count_name: self.adapter.num_values()}


class MergedForTest:
    """Merges the method's adapter (``self.adapter``, :attr:`StaticAdapter.mergeable`) into the base weights for
    test and predict, so that a static LoRA is scored at the frozen model's cost (unmerged peft LoRA costs ~1.3x
    forward and ~2.5x generate on a 7B model), and unmerges it afterwards. Validation during fit runs unmerged."""

    adapter: StaticAdapter

    def on_test_epoch_start(self) -> None:
        self.adapter.merge()
        super().on_test_epoch_start()

    def on_test_epoch_end(self) -> None:
        self._unmerge_after(super().on_test_epoch_end)

    def on_predict_epoch_start(self) -> None:
        self.adapter.merge()
        super().on_predict_epoch_start()

    def on_predict_epoch_end(self) -> None:
        self._unmerge_after(super().on_predict_epoch_end)

    def _unmerge_after(self, hook: Callable[[], None]) -> None:
        try:
            hook()
        finally:
            self.adapter.unmerge()


class StaticLoRAMethod(MergedForTest, AdaptedMethod):
    """A method adapting the frozen VLM's language model with one shared :class:`StaticLoRA`, merged for test.

    Args:
        rank: LoRA rank r (COPRA's default: 8).
        alpha: LoRA alpha (scale = alpha / rank).
        target_modules: LM Linear layers adapted: any of q, k, v, o, gate, up, down (the same modules as COPRA;
            never the vision tower).
        layers: LM decoder layer indices (``None``: all).
        **kwargs: the arguments of the method's base (its objective, optimiser and backbone settings).
    """

    def __init__(self, *, rank: int = 8, alpha: float = 16.0, target_modules: Sequence[str] = ALL_TARGETS,
                 layers: Sequence[int] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.adapter = StaticLoRA(self.backbone, rank=rank, alpha=alpha, target_modules=target_modules,
                                  layers=layers)
