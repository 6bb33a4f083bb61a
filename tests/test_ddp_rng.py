"""DDP ranks draw different noise: Lightning seeds every rank alike, so a fit's rank ``r > 0`` re-seeds from
(seed, r) when it starts (rank 0, hence a 1-process run, is untouched), and a resumed rank with its own snapshot
keeps it (bit-exact resume)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from copra_bench.tracking.rng_state import TrainingRNG, rank_seed


def _draws_after_start(rank: int, callback: TrainingRNG | None = None) -> torch.Tensor:
    torch.manual_seed(7)  # what seed_everything(7) does on every rank
    callback = callback or TrainingRNG()
    callback.on_train_start(SimpleNamespace(global_rank=rank), None)
    callback.on_train_batch_start(SimpleNamespace(global_rank=rank), None, None, 0)
    return torch.rand(8)


def test_rank_zero_keeps_the_seed_and_other_ranks_draw_their_own_noise():
    torch.manual_seed(7)
    plain = torch.rand(8)
    assert torch.equal(_draws_after_start(0), plain)  # a 1-process run (rank 0) is unchanged
    ranks = [_draws_after_start(r) for r in range(4)]
    assert all(not torch.equal(ranks[a], ranks[b]) for a in range(4) for b in range(a + 1, 4))
    torch.manual_seed(rank_seed(7, 2))
    assert torch.equal(ranks[2], torch.rand(8))  # a pure function of (seed, rank): a restart draws it again
    assert torch.equal(_draws_after_start(2), ranks[2])


def test_a_rank_resumed_with_its_own_snapshot_keeps_it():
    torch.manual_seed(123)
    interrupted = TrainingRNG()
    interrupted.on_train_batch_end(None, None, None, None, 0)  # the snapshot a checkpoint of this process holds
    expected = torch.rand(8)
    resumed = TrainingRNG()
    resumed.load_state_dict(interrupted.state_dict())
    assert torch.equal(_draws_after_start(1, resumed), expected)
