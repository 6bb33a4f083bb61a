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
from copra_bench.vlm.checkpointing import check_checkpointing, lm_checkpointing
from copra_bench.vlm.loading import checkpoint_family

AnswerLoss = Literal["lm", "binary"]


class SupervisedMethod(AdaptedMethod, TrainedModule):
    """Cross-entropy on the answer token under a static adaptation.

    Args:
        answer_loss: ``lm`` (the language-modelling loss of supervised fine-tuning: cross-entropy of the label token
            over the whole vocabulary) or ``binary`` (cross-entropy over the two label tokens only, i.e. on the
            score itself).
        micro_batch: Windows per forward + backward (None: the whole batch at once); the gradient is the same, the
            activations kept for backward are one micro-batch's (docs/memory.md).
        lm_checkpointing: Recompute each LM decoder layer in backward (the backbone stays in eval mode).
        **kwargs: :class:`~copra_bench.trained_module.TrainedModule` arguments (lr, epochs, ...) and the
            :class:`~copra_bench.bench_module.BenchModule` ones (backbone, dtype, ...).
    """

    def __init__(self, *, answer_loss: AnswerLoss = "lm", micro_batch: int | None = None,
                 lm_checkpointing: bool = False, **kwargs: Any) -> None:
        if answer_loss not in ("lm", "binary"):
            raise CopraError(f"model.answer_loss must be 'lm' or 'binary', got {answer_loss!r}")
        if micro_batch is not None and (isinstance(micro_batch, bool) or not isinstance(micro_batch, int)
                                        or micro_batch < 1):
            raise CopraError(f"model.micro_batch must be an integer >= 1 or null (the whole batch), got {micro_batch!r}")
        if lm_checkpointing:
            check_checkpointing(checkpoint_family(kwargs.get("backbone", "tiny-qwen2-vl")))
        super().__init__(**kwargs)
        self.answer_loss = answer_loss
        self.micro_batch, self.lm_checkpointing = micro_batch, bool(lm_checkpointing)

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
        labels = torch.as_tensor(batch["label"])
        n = len(labels)
        if (self.micro_batch or n) >= n and not self.lm_checkpointing:
            with self.adapter.adaptation(1):
                logits = self.backbone.answer_logits(batch["frames"], grad=True)
            loss, stats = self.answer_loss_of(logits, labels)
            self.optimise(loss, batch)
            self.log_step(stats, batch)
            return
        totals: dict[str, Any] = {}
        self.optimise(None, batch, backward=lambda: totals.update(self.accumulate_gradients(batch)))
        self.log_step(totals, batch)

    def accumulate_gradients(self, batch: dict, backward: Any = None) -> dict[str, Any]:
        """The batch's gradient in micro-batches of ``micro_batch`` windows, each one's backward inside the
        adaptation (recomputed, checkpointed layers need it on); ``backward`` defaults to ``manual_backward``.
        Returns the batch's statistics."""
        backward = backward or self.manual_backward
        labels = torch.as_tensor(batch["label"])
        n = len(labels)
        step = self.micro_batch or n
        totals: dict[str, Any] = {}
        for start in range(0, n, step):
            stop = min(start + step, n)
            with self.adapter.adaptation(1), lm_checkpointing(self.backbone, active=self.lm_checkpointing):
                logits = self.backbone.answer_logits(batch["frames"][start:stop], grad=True)
                loss, stats = self.answer_loss_of(logits, labels[start:stop])
                if not torch.isfinite(loss):
                    self.stop("non-finite loss", batch)
                backward(loss * ((stop - start) / n))  # the shares sum to the batch's mean
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + value.detach() * ((stop - start) / n)
        return totals
