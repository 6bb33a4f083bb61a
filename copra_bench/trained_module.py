"""``TrainedModule``: what every method that trains something shares (COPRA, prompt tuning, LoRA SFT, static GRPO).

One optimiser recipe for all of them, so that a comparison differs only in what is adapted and in the objective:
AdamW over the method's trainable tensors, optional linear warm-up, linear decay to 0 over the whole fit, gradient
clipping by norm, and ``epochs`` as the method's Trainer default. Training uses manual optimisation so that every
method gets the same guard: a non-finite loss or gradient stops training *before* the optimiser step, naming the
global step and the videos of the batch, and the last checkpoint stays intact. After the step the trained tensors are
checked again (an optimiser overflow, e.g. a learning rate of 1e38, is the same guard's error, not Adam's traceback),
and :meth:`TrainedModule.on_save_checkpoint` refuses to write a checkpoint holding a non-finite tensor, so
``last.ckpt`` is always the last good state. A validation pass whose scores are all equal (a collapse, e.g. a
learning rate of 1e9 saturating the answer) is a warning naming the step.

A method writes ``training_step`` as "compute a loss, call :meth:`TrainedModule.optimise`" (or several
``optimise`` calls, as GRPO does with ``num_iterations > 1``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

from copra_bench.bench_module import BenchModule
from copra_bench.errors import CopraError
from copra_bench.rl.engine import TrainingError

# The frozen VLM stays in eval mode on purpose (no dropout anywhere, as in VLM-R1), and the checkpoints of a
# manually optimised method hold the state after the step they are named after: Lightning's warnings about both do
# not apply.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization and every_n_train_steps")


#: Validation scores whose max - min is at most this are "all equal" (a collapsed method).
COLLAPSE_SPREAD = 1e-6


def nonfinite_count(tensors: Sequence[torch.Tensor]) -> int:
    """How many of ``tensors`` hold a NaN or inf (one device sync per device, not per tensor)."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for tensor in tensors:
        if tensor.is_floating_point() or tensor.is_complex():
            by_device.setdefault(tensor.device, []).append(~torch.isfinite(tensor).all())
    return sum(int(torch.stack(flags).sum()) for flags in by_device.values())


def _tensors(prefix: str, state: Any) -> Iterable[tuple[str, torch.Tensor]]:
    """Every tensor of a (nested) checkpoint entry, keyed by its path."""
    if isinstance(state, torch.Tensor):
        yield prefix.rstrip("."), state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from _tensors(f"{prefix}{key}.", value)
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            yield from _tensors(f"{prefix}{i}.", value)


class TrainedModule(BenchModule):
    """Base of the methods that train: the shared optimiser, schedule, non-finite guard and step logging.

    Args:
        lr: AdamW learning rate, linearly decayed to 0 over training (after ``warmup_steps``).
        weight_decay: AdamW weight decay.
        grad_clip: Gradient-norm clip (0 or less: no clipping).
        warmup_steps: Linear warm-up optimiser steps before the decay.
        epochs: Passes over the training videos: this method's Trainer default ``max_epochs`` (``trainer.max_epochs``
            in a config overrides it).
        **kwargs: :class:`~copra_bench.bench_module.BenchModule` arguments (backbone, dtype, ...).
    """

    #: Optimiser steps per training batch (GRPO's ``num_iterations``); the schedule's length is scaled by it.
    steps_per_batch: int = 1

    def __init__(self, *, lr: float = 1e-4, weight_decay: float = 0.0, grad_clip: float = 1.0,
                 warmup_steps: int = 0, epochs: int = 1, **kwargs: Any) -> None:
        # Checked before the backbone loads (minutes for a 7B checkpoint).
        if not (lr > 0 and math.isfinite(lr)):  # 1e999 parses as inf and would train straight into NaN
            raise CopraError(f"model.lr must be a finite number > 0, got {lr}")
        if not (grad_clip >= 0 and math.isfinite(grad_clip)) or not (weight_decay >= 0 and math.isfinite(weight_decay)):
            raise CopraError(f"model.grad_clip and model.weight_decay must be finite and >= 0, got {grad_clip} and "
                             f"{weight_decay}")
        if epochs < 0 or warmup_steps < 0:
            raise CopraError(f"model.epochs and model.warmup_steps must be >= 0, got {epochs} and {warmup_steps}")
        super().__init__(**kwargs)
        self.automatic_optimization = False
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.grad_clip = float(grad_clip)
        self.warmup_steps = int(warmup_steps)
        self.epochs = int(epochs)
        #: Why the trained state cannot be checkpointed (set when a step broke it), else None.
        self._diverged: str | None = None

    # ------------------------------------------------------------------------------------------------- settings
    @property
    def trainer_arguments(self) -> dict[str, Any]:
        return {"max_epochs": self.epochs}

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The tensors the optimiser updates (default: every parameter that requires grad)."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        params = self.trainable_parameters()
        if not params:
            raise CopraError(f"{type(self).__name__} has no trainable parameter: nothing to fit")
        optimizer = torch.optim.AdamW(params, lr=self.lr, betas=(0.9, 0.999), eps=1e-8,
                                      weight_decay=self.weight_decay)
        warmup = self.warmup_steps
        total: list[int] = []

        def linear(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            if step == 0:
                return 1.0
            # Known only once the fit loop has set up its data: asking for it in configure_optimizers would build
            # the train loader before a resumed checkpoint's loader position is restored.
            if not total:
                total.append(max(int(self.trainer.estimated_stepping_batches), 1) * self.steps_per_batch)
            return max(0.0, 1.0 - (step - warmup) / max(total[0] - warmup, 1))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -------------------------------------------------------------------------------------------- the guarded step
    def optimise(self, loss: torch.Tensor | None, batch: dict, *, backward: Any = None) -> None:
        """One guarded optimiser step on ``loss``: finite loss, backward, clip, finite gradients, step, finite
        trained tensors, schedule. ``backward()``, when given, computes the gradients itself instead (GRPO's
        micro-batches; ``loss`` None)."""
        if loss is not None and not torch.isfinite(loss).all():
            self.stop("non-finite loss", batch)
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        if backward is None:
            self.manual_backward(loss)
        else:
            backward()
        if self.grad_clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        params = self.trainable_parameters()
        if nonfinite_count([p.grad for p in params if p.grad is not None]):
            self.stop("non-finite gradients", batch)
        step, rate = self.global_step, self.lr_schedulers().get_last_lr()[0]
        try:
            optimizer.step()
        except RuntimeError as err:  # Adam's step size lr / (1 - beta1^t) does not fit the parameters' dtype
            if "overflow" not in str(err):
                raise
            self.diverged(f"the optimiser step overflowed at global step {step} (learning rate {rate:g}: {err})", step)
        if nonfinite_count(params):
            names = {id(p): name for name, p in self.named_parameters()}
            bad = [names.get(id(p), "?") for p in params if nonfinite_count([p])]
            self.diverged(f"the optimiser step at global step {step} (learning rate {rate:g}) made {len(bad)} of "
                          f"{len(params)} trained tensors non-finite (e.g. {', '.join(bad[:3])})", step)
        self.lr_schedulers().step()

    def diverged(self, what: str, step: int) -> None:
        """Stop after a step that broke the trained state: no checkpoint is written from this state."""
        kept = ("the last checkpoint (written before this step) is intact; lower model.lr (now "
                f"{self.lr:g}) and resume with --ckpt_path last, or start again" if step else
                f"no checkpoint was written before it; lower model.lr (now {self.lr:g}) and start again")
        self._diverged = f"{what}. Training stopped; no checkpoint is written from this state, {kept}."
        raise TrainingError(self._diverged)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to write a checkpoint after a step that diverged or holding any non-finite tensor (model or
        optimiser state): the checkpoint already on disk, the last good one, stays."""
        super().on_save_checkpoint(checkpoint)
        message = self._diverged
        if message is None:
            tensors = dict(_tensors("", checkpoint.get("state_dict", {})))
            tensors.update(_tensors("optimizer.", checkpoint.get("optimizer_states", [])))
            if nonfinite_count(list(tensors.values())):
                bad = [key for key, tensor in tensors.items() if nonfinite_count([tensor])]
                message = (f"{len(bad)} of {len(tensors)} tensors are not finite (e.g. {', '.join(bad[:3])}) at "
                           f"global step {self.global_step}; the last checkpoint on disk is kept. Lower model.lr "
                           f"(now {self.lr:g}) and resume with --ckpt_path last.")
        if message is not None:
            raise TrainingError(f"checkpoint not written: {message}")

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        spread = self.evaluator.validation_spread()
        if self.trainer.sanity_checking or spread is None or spread[0] < 2 or spread[2] - spread[1] > COLLAPSE_SPREAD:
            return
        rank_zero_warn(f"collapse at global step {self.global_step}: all {spread[0]} validation scores are "
                       f"{spread[1]:.6g}, so every AUC is 50% by construction. Training usually diverged: lower "
                       f"model.lr (now {self.lr:g}) and train again from a checkpoint before the collapse.",
                       stacklevel=2)

    def stop(self, what: str, batch: dict, inputs: Sequence[int] | None = None) -> None:
        """Raise the :class:`TrainingError` that names the step and the batch's videos (``inputs``: the offending
        inputs of the batch when known)."""
        raise TrainingError(f"{what} at global step {self.global_step} (inputs: {self._offenders(batch, inputs)}). "
                            "Training stopped before the optimiser step; the last checkpoint is intact. Lower "
                            "model.lr, check these videos, or resume with --ckpt_path last.",
                            inputs=list(inputs or []))

    def _offenders(self, batch: dict, inputs: Sequence[int] | None = None) -> str:
        records = getattr(getattr(self.trainer, "datamodule", None), "train_records", None) or []
        indices = batch["video_index"].tolist()
        if inputs:
            indices = [indices[i] for i in inputs if i < len(indices)]
        return ", ".join(records[i].name if i < len(records) else str(i) for i in indices)

    def log_step(self, stats: dict[str, Any] | Iterable[tuple[str, Any]], batch: dict) -> None:
        """Log finite scalar ``stats`` as ``train/<key>`` per step, with the current learning rate. Under DDP each
        value is the mean over the ranks (every rank's batch has the same size: that of one process's batch), so the
        logged step is the global batch's, as one process with the ranks' batches together logs it."""
        batch_size = len(batch["label"])
        items = stats.items() if isinstance(stats, dict) else stats
        scalars: dict[str, float] = {}
        for key, value in items:
            if isinstance(value, torch.Tensor):
                value = value.detach().float().item() if value.numel() == 1 else None
            if isinstance(value, (int, float)):
                scalars[key] = float(value)
        if scalars and self.trainer.world_size > 1:  # the same keys on every rank: one all-reduce per step
            values = self.trainer.strategy.reduce(torch.tensor(list(scalars.values()), dtype=torch.float64,
                                                               device=self.device), reduce_op="mean")
            scalars = dict(zip(scalars, values.tolist(), strict=True))
        for key, value in scalars.items():
            if math.isfinite(value):
                self.log(f"train/{key}", value, batch_size=batch_size, on_step=True, on_epoch=False)
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0], batch_size=batch_size, on_step=True,
                 on_epoch=False)
