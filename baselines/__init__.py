"""Methods COPRA is compared against, one folder each (plain ``nn.Module`` apart from the LightningModule)."""

from copra_bench.baselines.frozen import FrozenVLM

__all__ = ["FrozenVLM"]
