"""Prompt tuning: learned soft-prompt tokens in front of the prompt, cross-entropy on the answer."""

from __future__ import annotations

from typing import Any

from copra_bench.baselines.prompt_tuning.torch_model import SoftPrompt

from copra_bench.supervised_module import SupervisedMethod


class PromptTuning(SupervisedMethod):
    """Soft prompt tuning of the frozen VLM on video labels (a static baseline), with correct M-RoPE positions.

    At test time the soft prompt adds only its n tokens to the frozen model's cost.

    Args:
        num_virtual_tokens: Learned tokens in front of the prompt.
        init_text: Initialise them from this text's token embeddings (``None``: random vocabulary embeddings).
        lr: AdamW learning rate (prompt-tuning default 3e-3), linearly decayed to 0.
        **kwargs: ``answer_loss`` (:class:`~copra_bench.supervised_module.SupervisedMethod`), the optimiser
            settings (:class:`~copra_bench.trained_module.TrainedModule`) and the backbone settings
            (:class:`~copra_bench.bench_module.BenchModule`).
    """

    method_name = "prompt_tuning"

    def __init__(self, *, num_virtual_tokens: int = 20, init_text: str | None = None, lr: float = 3e-3,
                 **kwargs: Any) -> None:
        super().__init__(lr=lr, **kwargs)
        self.adapter = SoftPrompt(self.backbone, num_virtual_tokens=num_virtual_tokens, init_text=init_text,
                                  seed=self.hparams.backbone_seed)
