"""Frozen zero-shot baseline."""

from copra_bench.baselines.frozen.lightning_model import FrozenVLM
from copra_bench.baselines.frozen.torch_model import FrozenScorer

__all__ = ["FrozenScorer", "FrozenVLM"]
