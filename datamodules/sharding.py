"""Which reader decodes which test video: DDP ranks x DataLoader workers, balanced by window count.

A test pass costs one model call per window, and videos are read whole (each is decoded once), so the unit of work is
a video weighing its window count. Real test sets are long-tailed (UCF-Crime: two videos of 6,750 windows among 290
averaging 240), so dealing videos round-robin in list order leaves one rank with far more windows than the others:
1.63x the mean at 8 ranks x 4 workers on UCF-Crime, and every rank waits for the slowest.

:func:`deal_videos` deals longest-first (greedy LPT: each video, heaviest first, to the least loaded bin), first over
the ranks, so that rank loads balance, then within each rank over its workers. It is a pure function of the window
counts and the two sizes, so every rank and every worker computes the same dealing on its own (no communication), and
``WindowDataset.num_batches`` counts the progress bar's batches from the very dealing ``__iter__`` reads.
``benchmarks/ddp_balance.py`` prints the slowest rank against the mean for the real test sets (docs/benchmarks.md).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

#: ``dealing[rank][worker]``: the video indices that reader decodes, in ascending order.
Dealing = list[list[list[int]]]


def longest_first(*, sizes: Sequence[int], bins: int) -> list[list[int]]:
    """Greedy LPT: the items, heaviest first (ties: lower index first), each to the bin with the smallest load so
    far (ties: lower bin). Returns each bin's item indices in ascending order. The slowest bin is within 4/3 of the
    optimum (Graham 1969), and within one item of the mean whenever no item outweighs the mean."""
    if bins < 1:
        raise ValueError(f"need at least one bin, got {bins}")
    heap = [(0, b) for b in range(bins)]
    dealt: list[list[int]] = [[] for _ in range(bins)]
    for index in sorted(range(len(sizes)), key=lambda i: (-int(sizes[i]), i)):
        load, b = heapq.heappop(heap)
        dealt[b].append(index)
        heapq.heappush(heap, (load + int(sizes[index]), b))
    return [sorted(items) for items in dealt]


def deal_videos(*, window_counts: Sequence[int], world_size: int = 1, num_workers: int = 0) -> Dealing:
    """``dealing[rank][worker]``: longest-first over the ranks, then over each rank's workers (``num_workers=0``: one
    reader per rank, the main process). Every video is in exactly one reader's list."""
    workers = max(1, num_workers)
    dealing: Dealing = []
    for rank_videos in longest_first(sizes=window_counts, bins=world_size):
        per_worker = longest_first(sizes=[window_counts[i] for i in rank_videos], bins=workers)
        dealing.append([[rank_videos[j] for j in worker] for worker in per_worker])
    return dealing


def deal_round_robin(*, num_videos: int, world_size: int = 1, num_workers: int = 0) -> Dealing:
    """The former dealing, video ``i`` to reader ``i mod (ranks x workers)`` (reader ``rank * workers + worker``),
    kept to measure what the longest-first one gains (``benchmarks/ddp_balance.py``)."""
    workers = max(1, num_workers)
    readers = world_size * workers
    return [[list(range(rank * workers + worker, num_videos, readers)) for worker in range(workers)]
            for rank in range(world_size)]


def rank_loads(dealing: Dealing, window_counts: Sequence[int]) -> list[int]:
    """Windows each rank scores."""
    return [sum(int(window_counts[i]) for worker in rank for i in worker) for rank in dealing]


def imbalance(loads: Sequence[int]) -> float:
    """Slowest rank over the mean rank (1.0: perfectly balanced): the pass takes this much longer than it would
    balanced, as every rank waits for the slowest before evaluation."""
    mean = sum(loads) / len(loads)
    return max(loads) / mean if mean else 1.0
