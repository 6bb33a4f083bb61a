"""The loaders' samplers under one process and under DDP: the training order (:class:`EpochShuffle`, resumable through
:class:`ResumableLoader`) and the validation shards (:class:`RankShard`).

Both are ``DistributedSampler`` subclasses on purpose: Lightning replaces or wraps any other sampler of a
distributed run with its own (``use_distributed_sampler``; ``_requires_distributed_sampler`` in
``lightning/pytorch/trainer/connectors/data_connector.py`` keeps a ``DistributedSampler``), which would pad the
validation set with repeated clips, shuffle the training order a second time, and rebuild the loader without its
resumable position. Test windows are dealt by the dataset itself (``WindowDataset``, ``sharding.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler

from copra_bench.evaluation.ranks import rank, world_size


def ddp_rank_and_world() -> tuple[int, int]:
    """(DDP rank, world size); (0, 1) without a process group."""
    return rank(), world_size()


class RankShard(DistributedSampler):
    """Validation items of this DDP rank: ``rank, rank + N, ...`` in order, unpadded (ranks may get one item more
    than others), so every clip is scored exactly once and the gathered AUC is that of one process. Lightning's own
    ``DistributedSampler`` pads the set to a multiple of N by repeating clips; being a ``DistributedSampler``, this
    one is kept as it is (Lightning replaces only other samplers)."""

    def __init__(self, n: int, *, rank: int | None = None, world_size: int | None = None) -> None:
        ddp_rank, ddp_world = ddp_rank_and_world()
        super().__init__(range(n), num_replicas=ddp_world if world_size is None else world_size,
                         rank=ddp_rank if rank is None else rank, shuffle=False)
        self.n = n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.num_replicas))


class EpochShuffle(DistributedSampler):
    """A random order of ``n`` items that depends only on ``(seed, epoch)`` (Lightning calls ``set_epoch``), so a
    resumed run sees the very order the interrupted one saw; ``skip`` leaves out the first items (of the global
    order) of the next pass. Each item is ``(index, clip key)``: :class:`ClipDataset` seeds the item's frame jitter
    with the key.

    Under DDP (``world_size`` N, read from the process group unless given) every rank draws the same global order
    and takes its ``batch_size`` slice of each block of ``N * batch_size`` items, so global batch ``j`` of N ranks is
    the rows of batch ``j`` of one process with batch ``N * batch_size``. A last block of ``m < N * batch_size``
    items is split as evenly as the ranks allow (each rank's mean gradient then weighs as much as the others', not by
    its rows), and left out when ``m < N`` (a rank without a batch would leave the others waiting in the gradient
    all-reduce). A ``DistributedSampler``, so Lightning does not wrap it in its own (which would shuffle again)."""

    def __init__(self, n: int, *, seed: int, batch_size: int = 1, rank: int | None = None,
                 world_size: int | None = None) -> None:
        ddp_rank, ddp_world = ddp_rank_and_world()
        super().__init__(range(n), num_replicas=ddp_world if world_size is None else world_size,
                         rank=ddp_rank if rank is None else rank, shuffle=False, seed=seed)
        self.n, self.seed, self.epoch, self.skip = n, seed, 0, 0
        self.batch_size = max(1, int(batch_size))
        self.skip_epoch = 0  # the epoch ``skip`` belongs to: a resumed run restores it before Lightning's set_epoch
        # The run's seed (seed_everything's, the same on every DDP rank), taken when the train loader is built: a
        # DDP rank > 0 re-seeds its generators when the fit starts (tracking/rng_state.py), which must not change
        # which clips it reads.
        self.global_seed = torch.initial_seed()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _positions(self, n: int) -> list[int]:
        """Positions of the global order (of ``n`` items) this rank reads, in order."""
        world, b = self.num_replicas, self.batch_size
        if world == 1:
            return list(range(n))
        block = world * b
        full = n // block
        positions = [j * block + self.rank * b + i for j in range(full) for i in range(b)]
        m = n - full * block
        if m >= world:  # the last, partial block: as evenly as possible, the first ranks one row more
            share, extra = divmod(m, world)
            start = full * block + self.rank * share + min(self.rank, extra)
            positions += list(range(start, start + share + (self.rank < extra)))
        return positions

    def __len__(self) -> int:
        return len(self._positions(self.n))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        skip, self.skip = (self.skip if self.epoch == self.skip_epoch else 0), 0
        # each item's clip key: (global seed, partition seed, epoch, index), drawn in the main process
        keys = torch.Generator().manual_seed(
            (self.global_seed * 1_000_003 + self.seed * 100_003 + self.epoch) % 2**63)
        draws = torch.randint(0, 2**62, (self.n,), generator=keys).tolist()
        rest = order[skip:].tolist()
        return iter([(rest[p], draws[rest[p]]) for p in self._positions(len(rest))])


class ResumableLoader(DataLoader):
    """Training loader whose position survives a checkpoint: ``fit --ckpt_path last`` in the middle of an epoch
    continues with the clips the interrupted run had not trained on (Lightning saves ``state_dict`` with the
    checkpoint, from rank 0: the batch count is every rank's, and each rank's :class:`EpochShuffle` skips the
    steps' global items from its own place). ``progress`` returns the batches of the current epoch already trained
    on."""

    progress: Callable[[], int] | None = None

    def state_dict(self) -> dict[str, int]:
        sampler = self.sampler
        done = self.progress() if self.progress is not None else 0
        return {"epoch": int(getattr(sampler, "epoch", 0)), "batches_done": int(done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self.sampler
        if isinstance(sampler, EpochShuffle):  # restored before Lightning sets the epoch: the skip names its epoch
            sampler.skip_epoch = int(state.get("epoch", 0))
            # batches_done is the same on every rank; each rank skips the global items of those steps
            sampler.skip = int(state.get("batches_done", 0)) * int(self.batch_size or 1) * sampler.num_replicas
