"""The training and validation samplers under DDP: N ranks x batch b read the rows of one process with batch N*b,
resume from the same step on every rank, and validation reads every clip once (no DistributedSampler padding)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from copra_bench.datamodules import SyntheticUCFCrimeDataModule
from copra_bench.datamodules.datasets import EpochShuffle, RankShard, ResumableLoader
from lightning.pytorch.trainer.states import RunningStage
from torch.utils.data import DataLoader, DistributedSampler

from copra_bench.errors import DataError


def _batches(sampler: EpochShuffle, b: int) -> list[list[tuple[int, int]]]:
    items = list(sampler)
    return [items[i:i + b] for i in range(0, len(items), b)]


@pytest.mark.parametrize("n,world,b", [(24, 2, 3), (13, 2, 2), (17, 3, 2), (8, 4, 1)])
def test_the_global_batch_of_n_ranks_is_the_batch_of_one_process(n, world, b):
    torch.manual_seed(5)  # the clip keys follow seed_everything's seed, the same on every rank
    one = _batches(EpochShuffle(n, seed=2, batch_size=world * b, world_size=1, rank=0), world * b)
    ranks = [_batches(EpochShuffle(n, seed=2, batch_size=b, world_size=world, rank=r), b) for r in range(world)]
    assert len({len(r) for r in ranks}) == 1  # the same number of steps on every rank (no all-reduce left waiting)
    assert all(len(EpochShuffle(n, seed=2, batch_size=b, world_size=world, rank=r)) == sum(map(len, ranks[r]))
               for r in range(world))
    last_partial = n % (world * b)
    for step, batch in enumerate(one):
        if step == len(one) - 1 and last_partial and last_partial < world:
            assert len(ranks[0]) == len(one) - 1  # fewer clips than ranks: left out
            continue
        assert [item for r in range(world) for item in ranks[r][step]] == batch  # same rows, same keys, in order


def test_each_rank_resumes_at_the_step_the_run_stopped():
    torch.manual_seed(5)
    world, b, done = 2, 2, 3
    for rank in range(world):
        uninterrupted = _batches(EpochShuffle(20, seed=1, batch_size=b, world_size=world, rank=rank), b)
        sampler = EpochShuffle(20, seed=1, batch_size=b, world_size=world, rank=rank)
        loader = ResumableLoader(list(range(20)), batch_size=b, sampler=sampler)
        loader.load_state_dict({"epoch": 0, "batches_done": done})  # rank 0's checkpoint, read by every rank
        assert _batches(sampler, b) == uninterrupted[done:]


def test_validation_reads_every_clip_once_unpadded():
    shards = [RankShard(7, rank=r, world_size=3) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(7)) and [len(s) for s in shards] == [3, 2, 2]
    assert list(RankShard(4)) == [0, 1, 2, 3]  # one process
    # DistributedSamplers: Lightning's _requires_distributed_sampler keeps them instead of wrapping or replacing
    assert isinstance(shards[0], DistributedSampler) and isinstance(EpochShuffle(3, seed=0), DistributedSampler)


def test_fewer_validation_clips_than_ranks_is_a_clear_error(small_world, monkeypatch):
    dm = SyntheticUCFCrimeDataModule(domain="A", **small_world)
    dm.setup("fit")
    assert len(dm.val_records) == 2
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 0)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    assert len(dm.val_dataloader().sampler) == 1
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 3)
    with pytest.raises(DataError, match="2 validation clips for 3 DDP ranks"):
        dm.val_dataloader()


def test_lightning_keeps_both_samplers_under_ddp():
    """What Lightning does with a loader under a 2-process DDP trainer (its own data connector, the call it makes on
    every train / val loader): ours come back as they are, a plain loader gets its padded DistributedSampler."""
    trainer = L.Trainer(strategy="ddp", devices=2, accelerator="cpu", logger=False)
    prepare = trainer._data_connector._prepare_dataloader
    ours = {RunningStage.TRAINING: ResumableLoader(list(range(6)), batch_size=2, sampler=EpochShuffle(
                6, seed=0, batch_size=2, rank=0, world_size=2)),
            RunningStage.VALIDATING: DataLoader(list(range(5)), sampler=RankShard(5, rank=0, world_size=2))}
    for stage, loader in ours.items():
        assert prepare(loader, shuffle=stage == RunningStage.TRAINING, mode=stage) is loader
    plain = DataLoader(list(range(5)))
    replaced = prepare(plain, shuffle=False, mode=RunningStage.VALIDATING)
    assert replaced is not plain and isinstance(replaced.sampler, DistributedSampler)
    assert len(replaced.sampler) == 3  # 5 clips padded to 6: one counted twice, what RankShard avoids
