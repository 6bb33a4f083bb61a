"""Frozen zero-shot baseline: the VLM as released, prompted with the paper's prompt, nothing trained."""

from __future__ import annotations

from typing import Any

import torch

from copra_bench.baselines.frozen.torch_model import FrozenScorer
from copra_bench.bench_module import BenchModule
from copra_bench.vlm import ScoreOutput


class FrozenVLM(BenchModule):
    """Zero-shot scoring with the frozen VLM (the paper's "frozen" rows).

    ``fit`` has nothing to train: this method declares ``max_epochs=0`` as its Trainer default, so ``fit`` only sets
    up the run and the CLI goes straight to testing. Arguments: see :class:`~copra_bench.bench_module.BenchModule`.
    """

    method_name = "frozen"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = FrozenScorer(self.backbone)

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        return {"max_epochs": 0, "num_sanity_val_steps": 0}

    def score_windows(self, frames: torch.Tensor) -> ScoreOutput:
        return self.model(frames, return_features=self.keep_features)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        """Nothing to learn: the frozen model has no trainable parameter (``max_epochs=0`` skips this loop)."""
        return None

    def configure_optimizers(self) -> None:
        return None
