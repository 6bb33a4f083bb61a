"""Static adapters: one adaptation of the frozen VLM shared by every input, and what their methods share.

* :mod:`~copra_bench.adapters.base` — the protocol (:class:`StaticAdapter`): ``adaptation(repeats)``, trainable
  tensors, number of trained values, merge / unmerge where supported, ``save_pretrained``;
* :mod:`~copra_bench.adapters.lora` — :class:`StaticLoRA`, the peft LoRA of LoRA SFT and static LoRA + GRPO (the soft
  prompt of prompt tuning, :class:`~copra_bench.baselines.prompt_tuning.SoftPrompt`, lives with its method);
* :mod:`~copra_bench.adapters.method` — the LightningModule mixins (:class:`AdaptedMethod`, :class:`MergedForTest`,
  :class:`StaticLoRAMethod`).
"""

from .base import StaticAdapter
from .lora import StaticLoRA
from .method import AdaptedMethod, MergedForTest, StaticLoRAMethod

__all__ = ["AdaptedMethod", "MergedForTest", "StaticAdapter", "StaticLoRA", "StaticLoRAMethod"]
