"""The GRPO engine: rollouts, rewards, advantages, reference / old log-probs, and the loss, for any policy.

A *policy* (see :class:`Policy`) samples completions and scores their per-token log-probabilities, with or without
an *adaptation*. An adaptation is ``Callable[[int], ContextManager]``: ``adaptation(repeats)`` returns a context
inside which the backbone is adapted, the rows of its batch being the B inputs each repeated ``repeats`` times
consecutively (row n belongs to input n // repeats). ``None`` means the reference policy (frozen, not adapted).
The engine never looks inside an adaptation; COPRA's is ``lambda r: injector.apply(deltas, repeats=r)``.

One training step (manual optimisation)::

    experience = engine.make_experience(batch, adaptation)          # no grad: rollouts, rewards, ref log-probs
    for _ in range(config.num_iterations):
        loss, stats = engine.loss(batch, experience, adaptation)    # grad through the adaptation only
        loss.backward(); optimizer.step(); optimizer.zero_grad()
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from copra_bench.errors import CopraError

from .grpo import GRPOConfig, GRPOConfigError, group_advantages, grpo_loss
from .rewards import RewardError, RewardFn, resolve_rewards

__all__ = ["Adaptation", "Experience", "GRPOEngine", "Policy", "Rollouts", "TrainingError"]

Adaptation = Callable[[int], ContextManager]


class TrainingError(CopraError, RuntimeError):
    """Training hit a non-finite value (loss, log-probs, rewards). ``rows`` are the offending completion rows,
    ``inputs`` the offending inputs of the batch (row // G), so the caller can name the videos and the step."""

    def __init__(self, message: str, *, rows: Sequence[int] = (), inputs: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.rows = list(rows)
        self.inputs = list(inputs)


@dataclass
class Rollouts:
    """G sampled completions for each of B inputs, N = B * G rows, input-major.

    Attributes:
        completion_ids: ``[N, T]`` long token ids (T = longest completion; padding after the end).
        mask: ``[N, T]`` float, 1 for the completion's tokens (up to and including its end token), 0 after.
        texts: N decoded completions (what the rewards read).
        labels: ``[N]`` long video label of each row.
        num_generations: G.
        max_length: the completion length budget (Dr. GRPO's normaliser): ``max_completion_length``, or 1 for a
            policy answering with a single label token.
        temperature: the sampling temperature; log-probs are computed at it.
        extras: the policy's own cached tensors (prompt inputs, sampled choices), opaque to the engine.
    """

    completion_ids: torch.Tensor
    mask: torch.Tensor
    texts: list[str]
    labels: torch.Tensor
    num_generations: int
    max_length: int
    temperature: float = 1.0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return int(self.completion_ids.shape[0])

    @property
    def num_inputs(self) -> int:
        return self.num_rows // self.num_generations


@runtime_checkable
class Policy(Protocol):
    """What the engine needs from a policy (see :class:`copra_bench.rl.vlm_policy.VLMPolicy`)."""

    #: reward names used when the engine is given none (e.g. ``["accuracy", "format"]``).
    default_rewards: Sequence[str]

    def rollout(
        self, batch: dict, *, num_generations: int, adaptation: Adaptation | None, config: GRPOConfig
    ) -> Rollouts:
        """Sample ``num_generations`` completions per input of ``batch`` (``"frames"``, ``"label"``); no grad."""
        ...

    def completion_logprobs(self, batch: dict, rollouts: Rollouts, *, adaptation: Adaptation | None) -> torch.Tensor:
        """Per-token log-probs ``[N, T]`` of the rollouts' completions; differentiable through the adaptation
        when grad is enabled."""
        ...


@dataclass
class Experience:
    """What :meth:`GRPOEngine.make_experience` collects for one batch (all tensors detached)."""

    rollouts: Rollouts
    rewards: dict[str, torch.Tensor]  # reward name -> [N], unweighted
    total_rewards: torch.Tensor  # [N] weighted sum
    advantages: torch.Tensor  # [N]
    old_logp: torch.Tensor | None  # [N, T] when num_iterations > 1
    ref_logp: torch.Tensor | None  # [N, T] when beta > 0
    timings: dict[str, float]  # rollout_s, reward_s, old_s, ref_s (seconds)


class GRPOEngine:
    """GRPO for any :class:`Policy`.

    Args:
        policy: samples and scores completions.
        config: :class:`GRPOConfig` (or a dict of its fields).
        rewards: reward names / functions (see :mod:`copra_bench.rl.rewards`); None = ``policy.default_rewards``.
    """

    def __init__(
        self, policy: Policy, config: GRPOConfig | dict | None = None, rewards: Sequence[str | RewardFn] | None = None
    ) -> None:
        self.policy = policy
        self.config = config if isinstance(config, GRPOConfig) else GRPOConfig(**(config or {}))
        self.rewards = resolve_rewards(list(policy.default_rewards) if rewards is None else rewards)
        weights = self.config.reward_weights
        if weights is not None and len(weights) != len(self.rewards):
            raise GRPOConfigError(
                f"reward_weights has {len(weights)} entries but there are {len(self.rewards)} rewards "
                f"({', '.join(n for n, _ in self.rewards)})"
            )
        self.reward_weights = list(weights) if weights is not None else [1.0] * len(self.rewards)

    @property
    def reward_names(self) -> list[str]:
        return [name for name, _ in self.rewards]

    # ------------------------------------------------------------------ experience
    @torch.no_grad()
    def make_experience(self, batch: dict, adaptation: Adaptation | None) -> Experience:
        """Rollouts from the adapted policy, rewards, advantages, and the old / reference log-probs (no grad)."""
        cfg = self.config
        timings: dict[str, float] = {}
        start = _now()
        rollouts = self.policy.rollout(batch, num_generations=cfg.num_generations, adaptation=adaptation, config=cfg)
        timings["rollout_s"] = _now() - start

        start = _now()
        labels = [int(v) for v in rollouts.labels.tolist()]
        per_reward: dict[str, torch.Tensor] = {}
        for name, fn in self.rewards:
            values = torch.as_tensor(fn(rollouts.texts, labels), dtype=torch.float32).detach().cpu()
            if values.shape != (rollouts.num_rows,):
                raise RewardError(
                    f"reward {name!r} returned shape {tuple(values.shape)}, expected ({rollouts.num_rows},)"
                )
            self._check_finite(values.unsqueeze(1), rollouts, f"reward {name!r}", masked=False)
            per_reward[name] = values
        total = sum(w * per_reward[n] for w, (n, _) in zip(self.reward_weights, self.rewards))
        advantages = group_advantages(total, rollouts.num_generations, scale=cfg.scale_rewards)
        timings["reward_s"] = _now() - start

        old_logp = ref_logp = None
        timings["old_s"] = 0.0
        if cfg.num_iterations > 1:
            start = _now()
            old_logp = self.policy.completion_logprobs(batch, rollouts, adaptation=adaptation).detach()
            self._check_finite(old_logp, rollouts, "rollout-policy log-probs")
            timings["old_s"] = _now() - start
        timings["ref_s"] = 0.0
        if cfg.beta > 0:
            start = _now()
            ref_logp = self.policy.completion_logprobs(batch, rollouts, adaptation=None).detach()
            self._check_finite(ref_logp, rollouts, "reference log-probs")
            timings["ref_s"] = _now() - start
        device = rollouts.completion_ids.device
        return Experience(
            rollouts=rollouts,
            rewards={k: v.to(device) for k, v in per_reward.items()},
            total_rewards=total.to(device),
            advantages=advantages.to(device),
            old_logp=old_logp,
            ref_logp=ref_logp,
            timings=timings,
        )

    # ------------------------------------------------------------------ loss
    def loss(self, batch: dict, experience: Experience, adaptation: Adaptation | None) -> tuple[torch.Tensor, dict]:
        """GRPO loss of the experience's completions under ``adaptation`` (with grad when grad is enabled).

        Returns ``(loss, stats)``; stats are floats: ``loss``, ``kl``, ``clip_ratio`` (+ ``_low``/``_high``),
        ``reward/<name>`` means, ``reward/total``, ``reward/group_std`` (mean within-group std of the total
        reward: 0 means no learning signal), ``completion_length`` (mean tokens), the experience's timings and
        ``loss_forward_s``. Raises :class:`TrainingError` naming the rows when the log-probs or loss are not finite.
        """
        rollouts = experience.rollouts
        start = _now()
        logp = self.policy.completion_logprobs(batch, rollouts, adaptation=adaptation)
        forward_s = _now() - start
        self._check_finite(logp.detach(), rollouts, "policy log-probs")
        loss, loss_stats = grpo_loss(
            logp,
            experience.old_logp,
            experience.ref_logp,
            experience.advantages,
            rollouts.mask,
            self.config,
            max_completion_length=rollouts.max_length,
        )
        if not torch.isfinite(loss):
            rows = list(range(rollouts.num_rows))
            raise TrainingError(f"non-finite GRPO loss {loss.item()}: every row is suspect", rows=rows,
                                inputs=sorted({r // rollouts.num_generations for r in rows}))
        g = rollouts.num_generations
        stats: dict[str, float] = {"loss": float(loss.detach())}
        stats.update({k: float(v) for k, v in loss_stats.items()})
        for name, values in experience.rewards.items():
            stats[f"reward/{name}"] = float(values.float().mean())
        stats["reward/total"] = float(experience.total_rewards.mean())
        stats["reward/group_std"] = float(experience.total_rewards.float().view(-1, g).std(dim=1).mean())
        stats["completion_length"] = float(rollouts.mask.float().sum(dim=1).mean())
        stats.update({f"timing/{k}": float(v) for k, v in experience.timings.items()})
        stats["timing/loss_forward_s"] = forward_s
        return loss, stats

    @staticmethod
    def _check_finite(values: torch.Tensor, rollouts: Rollouts, what: str, *, masked: bool = True) -> None:
        """Raise :class:`TrainingError` naming the rows whose ``values`` ``[N, T]`` are not finite (only the
        completion tokens count when ``masked``)."""
        bad = ~torch.isfinite(values)
        if masked:
            bad = bad & (rollouts.mask.to(values.device) > 0)
        bad_rows = bad.any(dim=1).nonzero().flatten().tolist()
        if bad_rows:
            inputs = sorted({r // rollouts.num_generations for r in bad_rows})
            raise TrainingError(
                f"non-finite {what} in completion rows {bad_rows} (inputs {inputs} of the batch); the adaptation "
                "(generated weights) or the learning rate has probably diverged",
                rows=bad_rows,
                inputs=inputs,
            )


def _now() -> float:
    """Wall clock after waiting for queued GPU work, so that timings measure the work and not its launch."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()
