"""LoRA SFT baseline: one shared peft LoRA on COPRA's target modules, cross-entropy on the answer."""

from copra_bench.baselines.lora_sft.lightning_model import LoRASFT

__all__ = ["LoRASFT"]
