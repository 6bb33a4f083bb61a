"""The few collectives the evaluation needs under DDP: gather to rank 0, broadcast from it.

A test pass's scores (and features) go to rank 0 only, which evaluates (bootstrap included) and writes the results;
the other ranks receive the metrics it logged. Without an initialised process group every helper is the identity, so
one process needs no special case. Object collectives pickle: they carry numpy arrays and dicts as they are, work on
gloo and NCCL (Lightning sets each rank's CUDA device before any of them runs) and keep rank order.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch

T = TypeVar("T")


def distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if distributed() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if distributed() else 1


def gather_to_zero(value: T) -> list[T] | None:
    """Every rank's ``value`` in rank order on rank 0, None on the others (every rank must call it)."""
    if not distributed():
        return [value]
    parts: list[Any] | None = [None] * world_size() if rank() == 0 else None
    torch.distributed.gather_object(value, parts, dst=0)
    return parts


def broadcast_from_zero(value: T) -> T:
    """Rank 0's ``value`` on every rank (every rank must call it; the others' ``value`` is ignored)."""
    if not distributed():
        return value
    box = [value if rank() == 0 else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
