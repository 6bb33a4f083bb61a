"""Static LoRA + GRPO: one shared LoRA trained with COPRA's GRPO (the paper's Table 3 control)."""

from copra_bench.baselines.lora_grpo.lightning_model import StaticLoRAGRPO

__all__ = ["StaticLoRAGRPO"]
