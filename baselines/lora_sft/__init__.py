"""LoRA SFT baseline: one shared peft LoRA on COPRA's target modules, cross-entropy on the answer."""

from copra_bench.baselines.lora_sft.lightning_model import LoRASFT, MergedForTest
from copra_bench.baselines.lora_sft.torch_model import StaticLoRA

__all__ = ["LoRASFT", "MergedForTest", "StaticLoRA"]
