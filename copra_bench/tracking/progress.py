"""Progress of fit, validation, test and predict, with totals and an ETA, on a terminal and in a log file.

``configs/trainer/default.yaml`` names :class:`ProgressForOutput`, which picks the bar for where stdout goes:

* a terminal: Lightning's Rich bar (its tqdm bar without ``rich``) with n/total, elapsed • remaining and speed;
* anything else (a file, a pipe, a sweep's log, CI): :class:`LineProgressBar`, one plain line every ``interval_s``
  seconds and one when a stage (the whole fit, one test set) ends (a Rich bar writes nothing useful to a file).

The dense test/predict loaders stream an ``IterableDataset`` with no length (see ``WindowDataset``), so Lightning knows
no batch count for them; :func:`eval_batch_total` asks the dataset for the batches this rank's loader will yield, and
both bars show it as the total. Only the display uses it: the loop still runs until the loader is exhausted.
"""

from __future__ import annotations

import math
import sys
import time
from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE


def eval_batch_total(trainer: L.Trainer, stage: str, dataloader_idx: int | None) -> int | float:
    """Batches the ``stage`` (``"test"`` or ``"predict"``) dataloader ``dataloader_idx`` yields on this rank, from its
    dataset's ``num_batches`` (``WindowDataset``); ``inf`` for a loader whose dataset cannot tell."""
    loaders = trainer.test_dataloaders if stage == "test" else trainer.predict_dataloaders
    if loaders is None or dataloader_idx is None:
        return math.inf
    loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
    if dataloader_idx >= len(loaders):
        return math.inf
    loader = loaders[dataloader_idx]
    count = getattr(getattr(loader, "dataset", None), "num_batches", None)
    if count is None:
        return math.inf
    return count(int(loader.batch_size or 1), num_workers=int(loader.num_workers), rank=trainer.global_rank,
                 world_size=trainer.world_size)


def fit_batch_total(trainer: L.Trainer) -> int | float:
    """Training batches of the whole fit: ``max_epochs`` epochs, or ``max_steps`` optimiser steps if that ends first."""
    per_epoch = trainer.num_training_batches
    epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else math.inf
    by_epochs = per_epoch * epochs if per_epoch and math.isfinite(per_epoch) else math.inf
    steps = trainer.max_steps if trainer.max_steps not in (None, -1) else math.inf
    return min(by_epochs, steps * trainer.accumulate_grad_batches)


class _WindowTotals:
    """Mixin for a Lightning progress bar: the dense test/predict loaders' batch counts where Lightning has none."""

    @property
    def total_test_batches_current_dataloader(self) -> int | float:
        total = super().total_test_batches_current_dataloader
        return total if math.isfinite(total) else eval_batch_total(self.trainer, "test",
                                                                   self._current_eval_dataloader_idx)

    @property
    def total_predict_batches_current_dataloader(self) -> int | float:
        total = super().total_predict_batches_current_dataloader
        return total if math.isfinite(total) else eval_batch_total(self.trainer, "predict",
                                                                   self._current_eval_dataloader_idx)


class RichBarWithTotals(_WindowTotals, RichProgressBar):
    """Lightning's Rich bar with the dense loaders' totals. It also closes at the end of test and predict (Lightning's
    closes at teardown): the results table, printed by the module's ``on_test_end`` after every callback's, then comes
    below the finished bar instead of inside its live display."""

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_test_end(trainer, pl_module)
        self._stop_progress()

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_predict_end(trainer, pl_module)
        self._stop_progress()


class TQDMBarWithTotals(_WindowTotals, TQDMProgressBar):
    """Lightning's tqdm bar with the dense loaders' totals (a terminal without ``rich`` installed)."""


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


def progress_line(stage: str, done: int, total: int | float, elapsed: float, first: int = 0) -> str:
    """``fit epoch 3/40: 6/80 batches (8%), 2.10 batch/s, elapsed 0:00:02, ETA 0:00:35`` (no %/ETA without a total).
    ``first``: batches already done when the clock started (a resumed fit), left out of the rate."""
    rate = (done - first) / elapsed if elapsed > 0 else 0.0
    if math.isfinite(total) and total > 0:
        eta = _clock((total - done) / rate) if rate > 0 else "-:--:--"
        return (f"{stage}: {done}/{int(total)} batches ({100 * done / total:.0f}%), {rate:.2f} batch/s, "
                f"elapsed {_clock(elapsed)}, ETA {eta}")
    return f"{stage}: {done} batches, {rate:.2f} batch/s, elapsed {_clock(elapsed)}"


class LineProgressBar(_WindowTotals, ProgressBar):
    """Progress as plain lines, for output that is not a terminal: one line per stage at most every ``interval_s``
    seconds, and always one when the stage ends. The stages: the whole fit (labelled with the current epoch; its
    validation passes stay quiet), each validation set of ``validate``, each test set of ``test`` and ``predict``.

    Args:
        interval_s: Seconds between two lines of the same stage.
    """

    def __init__(self, interval_s: float = 30.0) -> None:
        super().__init__()
        if interval_s <= 0:
            raise ValueError(f"LineProgressBar: interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self._enabled = True
        self._stage: str | None = None
        self._total: int | float = math.inf
        self._done = 0
        self._started = self._printed_at = 0.0
        self._printed_done = self._first = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _begin(self, stage: str, total: int | float) -> None:
        self._finish()
        self._stage, self._total, self._done, self._first, self._printed_done = stage, total, 0, 0, -1
        self._started = self._printed_at = time.monotonic()

    def _advance(self, done: int) -> None:
        self._done = done
        now = time.monotonic()
        if self._done >= self._total or now - self._printed_at >= self.interval_s:
            self._print(now)

    def _finish(self) -> None:
        """The stage's last line, unless it was just printed."""
        if self._stage is not None and self._done != self._printed_done:
            self._print(time.monotonic())
        self._stage = None

    def _print(self, now: float) -> None:
        if self._enabled and self._stage is not None:
            print(progress_line(self._stage, self._done, self._total, now - self._started, self._first), flush=True)
        self._printed_at, self._printed_done = now, self._done

    def _eval_stage(self, trainer: L.Trainer, kind: str, dataloader_idx: int) -> str:
        loaders = {"test": trainer.test_dataloaders, "predict": trainer.predict_dataloaders,
                   "validate": trainer.val_dataloaders}[kind]
        count = len(loaders) if isinstance(loaders, (list, tuple)) else 1
        names = [ts.name for ts in getattr(trainer.datamodule, "test_sets", [])] if kind != "validate" else []
        label = names[dataloader_idx] if len(names) == count else f"{dataloader_idx + 1}/{count}"
        return f"{kind} {label}" if count > 1 or names else kind

    # fit: one stage over the whole fit (a line per epoch would flood a log: the main job has 40 epochs of 2 steps)
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin("fit", fit_batch_total(trainer))
        self._done = self._first = trainer.fit_loop.total_batch_idx if trainer.global_step else 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs not in (None, -1) else ""
        self._stage = f"fit epoch {trainer.current_epoch + 1}{epochs}"

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._advance(self._done + 1)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish()

    # the validate subcommand (validation inside fit stays quiet: the fit line covers it)
    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.state.fn == "validate" and self.has_dataloader_changed(dataloader_idx):
            self._begin(self._eval_stage(trainer, "validate", dataloader_idx),
                        self.total_val_batches_current_dataloader)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.state.fn == "validate":
            self._advance(batch_idx + 1)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._finish()
            self.reset_dataloader_idx_tracker()

    # test and predict: one stage per test set
    def on_test_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int,
                            dataloader_idx: int = 0) -> None:
        if self.has_dataloader_changed(dataloader_idx):
            self._begin(self._eval_stage(trainer, "test", dataloader_idx), self.total_test_batches_current_dataloader)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._advance(batch_idx + 1)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish()
        self.reset_dataloader_idx_tracker()

    def on_predict_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int,
                               dataloader_idx: int = 0) -> None:
        if self.has_dataloader_changed(dataloader_idx):
            self._begin(self._eval_stage(trainer, "predict", dataloader_idx),
                        self.total_predict_batches_current_dataloader)

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self._advance(batch_idx + 1)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish()
        self.reset_dataloader_idx_tracker()


class ProgressForOutput(ProgressBar):
    """The progress bar for where stdout goes, chosen when the Trainer is built: :class:`RichBarWithTotals` (or
    :class:`TQDMBarWithTotals` without ``rich``) on a terminal, :class:`LineProgressBar` otherwise.

    Constructing it returns one of those (this class only chooses), so the trainer config names one entry that works
    in both places.

    Args:
        interval_s: Seconds between two plain lines (not a terminal).
        refresh_rate: Batches between two redraws of the terminal bar.
    """

    def __new__(cls, interval_s: float = 30.0, refresh_rate: int = 1) -> ProgressBar:  # type: ignore[misc]
        if not sys.stdout.isatty():
            return LineProgressBar(interval_s=interval_s)
        if _RICH_AVAILABLE:
            return RichBarWithTotals(refresh_rate=refresh_rate)
        return TQDMBarWithTotals(refresh_rate=refresh_rate)
