"""Bit-exact resume: every random generator a training step draws from is part of the checkpoint.

A step draws from the process-wide generators: torch's CPU generator and every CUDA device's (GRPO's rollout
sampling, dropout), numpy's and Python's ``random`` (any code a method calls). Training clips do not: their frame
jitter is keyed on (seed, epoch, video) by the train sampler (``datamodules/samplers.py:EpochShuffle``), and the
sampler's position is the train loader's own ``state_dict``.

:class:`TrainingRNG` makes the generators' state at the start of each step a function of the training so far, never
of what ran around it, so that a run resumed from ``last.ckpt`` continues with the very draws of an uninterrupted one:

* at the end of every training batch it takes a snapshot of all generators (before any checkpoint is written:
  Lightning runs checkpoint callbacks last), which is its ``state_dict`` in the checkpoint;
* at the start of every training batch it puts that snapshot back. Whatever drew in between (the data loader's
  base seed when an epoch starts, a validation pass, a resumed process's start-up) does not leak into the next step.

In a resumed process the snapshot comes from the checkpoint, so step ``N + 1`` starts from the state step ``N`` left.
Under DDP each rank keeps its own snapshot, and the checkpoint (written by rank 0) holds every rank's: writing one
gathers them (Lightning builds the checkpoint on every rank), and a resumed rank ``r`` puts back snapshot ``r``, so a
DDP run resumed on as many ranks continues with every rank's very draws. Resumed on another number of ranks, each
rank takes rank 0's (a resume that cannot repeat the interrupted draws; GRPO rollouts then differ from it).

Lightning's ``seed_everything`` seeds every rank alike, so without more the ranks' GRPO rollouts would draw the same
noise on their different rows (correlated exploration). When a fit starts without a snapshot of its own, rank
``r > 0`` re-seeds its generators from (the run's seed, ``r``) (:func:`rank_seed`); rank 0 keeps the run's seed, so
a 1-process run is unchanged, and the derived seed is a pure function of the seed and the rank, so it resumes.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch

from copra_bench.evaluation.ranks import distributed, rank, world_size


def capture() -> dict[str, Any]:
    """The state of torch (CPU and every initialised CUDA device), numpy and Python ``random``."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    """Put back a :func:`capture` (CUDA states only where this process has the same devices initialised)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


#: Spaces the ranks' seeds apart (a prime: seeds s + k * RANK_SEED_STRIDE never collide for small s, k).
RANK_SEED_STRIDE = 1_000_003


def rank_seed(seed: int, rank: int) -> int:
    """The seed rank ``rank`` of a DDP fit draws from (``seed`` itself on rank 0)."""
    return (int(seed) + RANK_SEED_STRIDE * int(rank)) % 2**63


def reseed(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python ``random`` from ``seed``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _plain(state: dict[str, Any]) -> dict[str, Any]:
    """Checkpoint-friendly copy: numpy's state as plain Python values (no pickled numpy objects in ``last.ckpt``)."""
    kind, keys, pos, has_gauss, cached = state["numpy"]
    out = dict(state, numpy=[kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                             float(cached)])
    out["python"] = [state["python"][0], list(state["python"][1]), state["python"][2]]
    return out


def _native(state: dict[str, Any]) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = state["numpy"]
    version, internal, gauss = state["python"]
    return dict(state, numpy=(kind, torch.as_tensor(keys).numpy().astype(np.uint32), pos, has_gauss, cached),
                python=(version, tuple(internal), gauss))


class TrainingRNG(L.Callback):
    """Snapshot the generators after each training batch, put the snapshot back before the next one, and keep it in
    the checkpoint (see the module docstring). The CLI adds it to every Trainer."""

    def __init__(self) -> None:
        self._snapshot: dict[str, Any] | None = None
        self._own_snapshot = False  # loaded this rank's own snapshot from a checkpoint

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank > 0 and not self._own_snapshot:  # see the module docstring
            reseed(rank_seed(torch.initial_seed(), trainer.global_rank))
            self._snapshot = capture()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._snapshot is not None:
            restore(self._snapshot)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._snapshot = capture()

    def state_dict(self) -> dict[str, Any]:
        if self._snapshot is None:
            return {}
        own = _plain(self._snapshot)
        if not distributed():
            return {"generators": own}
        ranks: list[Any] = [None] * world_size()
        torch.distributed.all_gather_object(ranks, own)  # every rank builds the checkpoint, rank 0 writes it
        return {"generators": ranks[0], "rank_generators": ranks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        generators = state_dict.get("generators")
        ranks = state_dict.get("rank_generators")
        if ranks and distributed() and len(ranks) == world_size():
            generators = ranks[rank()]
            self._own_snapshot = True
        elif generators is not None:  # a 1-process checkpoint is this process's own; rank 0's is not rank 1's
            self._own_snapshot = world_size() == 1
        self._snapshot = None if generators is None else _native(generators)
