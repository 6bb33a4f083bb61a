"""Reward functions for GRPO, registered by name so that configs can list them (``rewards: [accuracy, format]``).

A reward function takes the decoded completions (``N`` strings, input-major: row n belongs to input n // G) and
the video label of each row (``N`` ints, 0 normal / 1 abnormal) and returns a float32 tensor ``[N]``.
Add one with :func:`register_reward`::

    @register_reward("brevity")
    def brevity_reward(completions, labels):
        return torch.tensor([1.0 if len(c) < 200 else 0.0 for c in completions])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from copra_bench.errors import CopraError
from copra_bench.vlm.prompts import format_reward as _format_match
from copra_bench.vlm.prompts import parse_answer

__all__ = [
    "REWARDS",
    "RewardError",
    "RewardFn",
    "accuracy_reward",
    "format_reward",
    "get_reward",
    "register_reward",
    "resolve_rewards",
]

RewardFn = Callable[[Sequence[str], Sequence[int]], torch.Tensor]

#: name -> reward function.
REWARDS: dict[str, RewardFn] = {}


class RewardError(CopraError, ValueError):
    """An unknown reward name, or a reward function that returned something other than N finite floats."""


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator registering a reward function under ``name`` (an existing name is an error)."""

    def decorator(fn: RewardFn) -> RewardFn:
        if name in REWARDS and REWARDS[name] is not fn:
            raise RewardError(f"a reward named {name!r} is already registered ({REWARDS[name]!r})")
        REWARDS[name] = fn
        return fn

    return decorator


@register_reward("accuracy")
def accuracy_reward(completions: Sequence[str], labels: Sequence[int]) -> torch.Tensor:
    """1.0 where the label parsed from ``<answer>…</answer>`` equals the video label, else 0.0 (also unparsable)."""
    _check_lengths(completions, labels)
    return torch.tensor(
        [1.0 if (answer := parse_answer(text)) is not None and answer == int(label) else 0.0
         for text, label in zip(completions, labels)],
        dtype=torch.float32,
    )


@register_reward("format")
def format_reward(completions: Sequence[str], labels: Sequence[int] | None = None) -> torch.Tensor:
    """VLM-R1's format reward: 1.0 when the whole completion matches ``<think>.*?</think>\\s*<answer>.*?</answer>``
    (``re.fullmatch`` with DOTALL, see :data:`copra_bench.vlm.prompts.FORMAT_REGEX`); ``labels`` are unused."""
    if labels is not None:
        _check_lengths(completions, labels)
    return torch.tensor([_format_match(text) for text in completions], dtype=torch.float32)


def get_reward(name: str) -> RewardFn:
    """The reward function registered as ``name``."""
    try:
        return REWARDS[name]
    except KeyError:
        raise RewardError(
            f"unknown reward {name!r}; registered rewards: {', '.join(sorted(REWARDS))} "
            "(add one with copra_bench.rl.rewards.register_reward)"
        ) from None


def resolve_rewards(spec: Sequence[str | RewardFn]) -> list[tuple[str, RewardFn]]:
    """``[(name, fn)]`` for a list of reward names and/or callables (a callable is named by its ``__name__``)."""
    if isinstance(spec, str) or not len(spec):
        raise RewardError(f"rewards must be a non-empty list of reward names or functions; got {spec!r}")
    resolved: list[tuple[str, RewardFn]] = []
    for item in spec:
        if isinstance(item, str):
            resolved.append((item, get_reward(item)))
        elif callable(item):
            resolved.append((getattr(item, "__name__", repr(item)), item))
        else:
            raise RewardError(f"a reward must be a registered name or a callable; got {item!r}")
    names = [n for n, _ in resolved]
    if len(set(names)) != len(names):
        raise RewardError(f"reward names must be unique; got {names}")
    return resolved


def _check_lengths(completions: Sequence[str], labels: Sequence[int]) -> None:
    if len(completions) != len(labels):
        raise RewardError(f"{len(completions)} completions but {len(labels)} labels")
