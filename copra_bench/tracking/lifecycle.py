"""How a run ends: at a safe point after a stop signal, with its final ``last.ckpt``, and with the reason recorded.

:class:`RunLifecycle` (added to every Trainer by the CLI):

* after a stop signal (:data:`copra_bench.signals.STOP`) it raises :class:`~copra_bench.signals.RunStopped` at the
  next safe point: after the current training step, with ``last.ckpt`` written first (resuming continues from that
  very step), or after the current validation / test / predict batch (a signal during validation keeps the
  ``last.ckpt`` of the last checkpointed step: the steps after it are redone, bit-exactly, on resume);
* when training ends it writes ``last.ckpt`` with the final weights and loop state, so ``fit --ckpt_path last`` on a
  run whose test did not finish tests that model without training again;
* on any exception it puts the reason on the logger: the run's ``end_reason`` tag next to its FAILED / KILLED status.

Under DDP it also takes SIGTERM back from Lightning once Lightning has installed its handler (each stage's start):
Lightning's handler (2.6, ``_SignalConnector._sigterm_notifier_fn``) broadcasts from rank 0 *inside the handler*, a
collective at whatever point the signal lands, mismatched with the collective the other rank is in (a gradient
all-reduce): on gloo rank 1 died with "Connection closed by peer" and rank 0 stopped without ``last.ckpt``. Here the
handler only records the stop and forwards the signal to the ranks this process launched (what Lightning's does
first); the ranks then agree on it in the all-reduce after each training step, a point every rank reaches.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from copra_bench.signals import STOP, RunStopped

from .logger import mlflow_logger_of

REASON_CHARS = 1000


def last_checkpoint_path(trainer: L.Trainer) -> Path | None:
    """Where the trainer's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` (None without one)."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return None


class RunLifecycle(L.Callback):
    """Safe-point stops, the final ``last.ckpt`` and the end reason (see the module docstring)."""

    def __init__(self) -> None:
        self._stopping: str | None = None  # where the run stopped, once last.ckpt is written

    @staticmethod
    def _take_sigterm_back(trainer: L.Trainer) -> None:
        """Under DDP, replace Lightning's SIGTERM handler (installed just before each stage runs) by one that
        records the stop and forwards the signal to the launched ranks, without a collective (module docstring)."""
        if trainer.world_size <= 1 or threading.current_thread() is not threading.main_thread():
            return

        def record_and_forward(signum: int, frame: Any) -> None:
            first = not STOP.requested
            STOP.handle(signum, frame)
            launcher = trainer.strategy.launcher
            if first and launcher is not None:
                launcher.kill(signum)  # the ranks this process started (none on the others)

        signal.signal(signal.SIGTERM, record_and_forward)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_sigterm_back(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_sigterm_back(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_sigterm_back(trainer)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_sigterm_back(trainer)

    def _save_last(self, trainer: L.Trainer) -> Path | None:
        path = last_checkpoint_path(trainer)
        if path is not None and trainer.global_step > 0:
            trainer.save_checkpoint(path, weights_only=False)  # the full state (optimiser, loops): a resumable last.ckpt
            return path
        return None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # Checkpoint now, stop before the next step: Lightning logs this step's metrics after this hook (and stops
        # itself there on SIGTERM), so the stopped step is in the metrics exactly once.
        # every rank decides together (a signal reaches the ranks at different steps; saving is collective)
        if trainer.strategy.reduce_boolean_decision(STOP.requested, all=False) and self._stopping is None:
            if not STOP.requested:
                STOP.request(signal.SIGTERM, "SIGTERM received by another rank")
            path = self._save_last(trainer)
            written = f"{path} written" if path is not None else "no checkpoint callback: nothing saved"
            self._stopping = STOP.where = f"after training step {trainer.global_step} ({written})"

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if self._stopping is not None:
            raise RunStopped(self._stopping)

    def _stop_in(self, stage: str, trainer: L.Trainer) -> None:
        if self._stopping is not None:
            raise RunStopped(self._stopping)
        if STOP.requested:
            raise RunStopped(f"during {stage} (training step {trainer.global_step})")

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._stop_in("validation", trainer)

    def on_test_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._stop_in("test", trainer)

    def on_predict_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._stop_in("predict", trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_last(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        logger = mlflow_logger_of(trainer)
        if logger is None:
            return
        if STOP.requested:
            where = exception.where if isinstance(exception, RunStopped) else self._stopping
            logger.end_reason = f"{STOP.reason}; stopped {where}" if where else str(STOP.reason)
        else:
            text = str(exception).strip() or type(exception).__name__
            logger.end_reason = f"{type(exception).__name__}: {text}"[:REASON_CHARS]
