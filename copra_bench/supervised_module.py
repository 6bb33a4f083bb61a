"""``SupervisedMethod``: a static adaptation trained with cross-entropy on the answer (prompt tuning, LoRA SFT).

The VLM sees exactly the prompt every method is scored with (system prompt, the window's K frames, the user prompt,
the assistant turn up to the answer prefix ``<answer>``) and is trained to put the window's video label next:
``"1"`` for a window of an anomalous video, ``"0"`` otherwise (weak, video-level supervision, as COPRA's GRPO
reward). Scoring reads the same position, so the objective and the score agree.

A subclass builds ``self.adapter``, a :class:`~copra_bench.adapters.StaticAdapter` (a soft prompt, a LoRA): inside
``adaptation(repeats)`` the backbone is adapted, its trainable parameters are the method's, and ``save_pretrained``
writes it for use outside the project (the run's ``trained/`` artifacts). Scoring, training tensors, export and the
logged size come from :class:`~copra_bench.adapters.AdaptedMethod`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from copra_bench.adapters import AdaptedMethod
from copra_bench.errors import CopraError
from copra_bench.trained_module import TrainedModule

AnswerLoss = Literal["lm", "binary"]


class SupervisedMethod(AdaptedMethod, TrainedModule):
    """Cross-entropy on the answer token under a static adaptation.

    Args:
        answer_loss: ``lm`` (the language-modelling loss of supervised fine-tuning: cross-entropy of the label token
            over the whole vocabulary) or ``binary`` (cross-entropy over the two label tokens only, i.e. on the
            score itself).
        **kwargs: :class:`~copra_bench.trained_module.TrainedModule` arguments (lr, epochs, ...) and the
            :class:`~copra_bench.bench_module.BenchModule` ones (backbone, dtype, ...).
    """

    def __init__(self, *, answer_loss: AnswerLoss = "lm", **kwargs: Any) -> None:
        if answer_loss not in ("lm", "binary"):
            raise CopraError(f"model.answer_loss must be 'lm' or 'binary', got {answer_loss!r}")
        super().__init__(**kwargs)
        self.answer_loss = answer_loss

    def answer_loss_of(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """Loss and statistics from the answer-position logits ``[B, V]`` and the labels ``[B]`` (0 / 1)."""
        id0, id1 = self.backbone.answer_token_ids
        pair = torch.stack((logits[:, id0], logits[:, id1]), dim=-1).float()
        labels = labels.long().to(logits.device)
        if self.answer_loss == "lm":
            targets = torch.tensor([id0, id1], device=logits.device)[labels]
            loss = F.cross_entropy(logits.float(), targets)
        else:
            loss = F.cross_entropy(pair, labels)
        p_anomaly = torch.softmax(pair, dim=-1)[:, 1]
        stats = {"loss": loss.detach(), "accuracy": ((p_anomaly > 0.5).long() == labels).float().mean(),
                 "p_anomaly": p_anomaly.detach().mean()}
        return loss, stats

    def training_step(self, batch: dict, batch_idx: int) -> None:
        with self.adapter.adaptation(1):
            logits = self.backbone.answer_logits(batch["frames"], grad=True)
        loss, stats = self.answer_loss_of(logits, torch.as_tensor(batch["label"]))
        self.optimise(loss, batch)
        self.log_step(stats, batch)
