"""The GRPO engine: rollouts, rewards, advantages, reference / old log-probs, and the loss, for any policy.

A *policy* (see :class:`Policy`) samples completions and scores their per-token log-probabilities, with or without
an *adaptation*. An adaptation is ``Callable[[int], ContextManager]``: ``adaptation(repeats)`` returns a context
inside which the backbone is adapted, the rows of its batch being the B inputs each repeated ``repeats`` times
consecutively (row n belongs to input n // repeats). ``None`` means the reference policy (frozen, not adapted).
The engine never looks inside an adaptation; COPRA's is ``lambda r: injector.apply(deltas, repeats=r)``.

One training step (manual optimisation)::

    experience = engine.make_experience(batch, adaptation)          # no grad: rollouts, rewards, ref log-probs
    for _ in range(config.num_iterations):
        loss, stats = engine.backward(batch, experience, adaptation)  # micro-batched forward + backward
        optimizer.step(); optimizer.zero_grad()

Memory: :meth:`GRPOEngine.backward` runs the loss in micro-batches of ``config.loss_micro_batch`` rows, each one's
backward inside its adaptation context (so that layers recomputed by gradient checkpointing see the adaptation)
before the next forward; the old / reference forwards use the same micro-batches. A per-input adaptation restricts
itself to a micro-batch's inputs through ``adaptation.select(range)``; one without ``select`` is shared by every
input. An adaptation whose tensors come from a network (COPRA's generated LoRA) may offer ``accumulate()`` ->
``(leaf adaptation, finish)``: the micro-batches then backpropagate into detached leaf copies, and ``finish(backward)``
sends their summed gradient through the network once (exactly the gradient of the unbatched step).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from copra_bench.errors import CopraError

from .grpo import GRPOConfig, GRPOConfigError, group_advantages, grpo_loss, row_chunks
from .rewards import RewardError, RewardFn, resolve_rewards

__all__ = ["Adaptation", "Experience", "GRPOEngine", "Policy", "Rollouts", "TrainingError", "restrict_adaptation"]

Adaptation = Callable[[int], ContextManager]


def restrict_adaptation(adaptation: Adaptation | None, inputs: range, num_inputs: int) -> Adaptation | None:
    """The adaptation of inputs ``inputs`` of a batch of ``num_inputs`` (its ``select``; a shared one as it is)."""
    if adaptation is None or (inputs.start == 0 and inputs.stop == num_inputs):
        return adaptation
    select = getattr(adaptation, "select", None)
    return adaptation if select is None else select(inputs)


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

    def completion_logprobs(self, batch: dict, rollouts: Rollouts, *, adaptation: Adaptation | None,
                            rows: tuple[int, int] | None = None, inside: Callable | None = None) -> Any:
        """Per-token log-probs ``[N, T]`` of the rollouts' completions; differentiable through the adaptation
        when grad is enabled. ``rows``: only rows ``[start, stop)`` (a chunk of :func:`~copra_bench.rl.grpo.row_chunks`).
        ``inside``: called with the log-probs while the adaptation is still active; its result is returned."""
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
            old_logp = self._logprobs_no_grad(batch, rollouts, adaptation)
            self._check_finite(old_logp, rollouts, "rollout-policy log-probs")
            timings["old_s"] = _now() - start
        timings["ref_s"] = 0.0
        if cfg.beta > 0:
            start = _now()
            ref_logp = self._logprobs_no_grad(batch, rollouts, None)
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

    def _logprobs_no_grad(self, batch: dict, rollouts: Rollouts, adaptation: Adaptation | None) -> torch.Tensor:
        """Old or reference log-probs, in the loss's micro-batches (one forward when unset)."""
        chunks = row_chunks(rollouts.num_rows, rollouts.num_generations, self.config.loss_micro_batch)
        with torch.no_grad():
            if len(chunks) == 1:
                return self.policy.completion_logprobs(batch, rollouts, adaptation=adaptation).detach()
            parts = [self.policy.completion_logprobs(batch, rollouts, adaptation=adaptation, rows=c) for c in chunks]
        return torch.cat(parts, dim=0).detach()

    # ------------------------------------------------------------------ loss
    def backward(self, batch: dict, experience: Experience, adaptation: Adaptation | None, *,
                 backward: Callable[[torch.Tensor], Any] | None = None) -> tuple[torch.Tensor, dict]:
        """The GRPO loss's gradient, accumulated into the adaptation's parameters micro-batch by micro-batch.

        Each micro-batch of ``config.loss_micro_batch`` rows: forward under its adaptation, its share of the loss
        (the batch's normalisers: the shares sum to :meth:`loss`), a finite check, ``backward(share)`` while the
        adaptation is active. ``backward`` defaults to ``Tensor.backward`` (a LightningModule passes
        ``manual_backward``). Returns ``(loss, stats)`` as :meth:`loss`, the loss detached; stats add
        ``timing/backward_s``. Raises :class:`TrainingError` before the first backward of a non-finite micro-batch.
        """
        backward = backward or torch.Tensor.backward
        rollouts, g = experience.rollouts, experience.rollouts.num_generations
        chunks = row_chunks(rollouts.num_rows, g, self.config.loss_micro_batch)
        finish = None
        if len(chunks) > 1 and hasattr(adaptation, "accumulate"):
            adaptation, finish = adaptation.accumulate()
        tokens = rollouts.mask.sum()
        totals: dict[str, torch.Tensor] = {}
        times = {"forward": 0.0, "backward": 0.0}

        def share(logp: torch.Tensor, start: int, stop: int) -> None:
            times["forward"] += _now() - times.pop("t0")
            self._check_finite(logp.detach(), rollouts, "policy log-probs", offset=start)
            part, part_stats = grpo_loss(
                logp, _rows(experience.old_logp, start, stop), _rows(experience.ref_logp, start, stop),
                experience.advantages[start:stop], rollouts.mask[start:stop], self.config,
                max_completion_length=rollouts.max_length,
                **({} if len(chunks) == 1 else {"num_rows": rollouts.num_rows, "num_tokens": tokens}))
            if not torch.isfinite(part):
                rows = list(range(start, stop))
                raise TrainingError(f"non-finite GRPO loss in completion rows {start}..{stop - 1}", rows=rows,
                                    inputs=sorted({r // g for r in rows}))
            t0 = _now()
            backward(part)
            times["backward"] += _now() - t0
            for key, value in {"loss": part, **part_stats}.items():
                totals[key] = totals.get(key, 0.0) + value.detach()

        for start, stop in chunks:
            times["t0"] = _now()
            rows = None if len(chunks) == 1 else (start, stop)
            self.policy.completion_logprobs(batch, rollouts, adaptation=adaptation, rows=rows,
                                            inside=lambda logp, a=start, b=stop: share(logp, a, b))
        if finish is not None:
            t0 = _now()
            finish(backward)
            times["backward"] += _now() - t0
        stats = self._stats(experience, totals)
        stats["timing/loss_forward_s"], stats["timing/backward_s"] = times["forward"], times["backward"]
        return totals["loss"], stats

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
        stats = self._stats(experience, {"loss": loss, **loss_stats})
        stats["timing/loss_forward_s"] = forward_s
        return loss, stats

    @staticmethod
    def _stats(experience: Experience, loss_stats: dict[str, torch.Tensor]) -> dict[str, float]:
        rollouts = experience.rollouts
        g = rollouts.num_generations
        stats: dict[str, float] = {k: float(v.detach()) for k, v in loss_stats.items()}
        for name, values in experience.rewards.items():
            stats[f"reward/{name}"] = float(values.float().mean())
        stats["reward/total"] = float(experience.total_rewards.mean())
        stats["reward/group_std"] = float(experience.total_rewards.float().view(-1, g).std(dim=1).mean())
        stats["completion_length"] = float(rollouts.mask.float().sum(dim=1).mean())
        stats.update({f"timing/{k}": float(v) for k, v in experience.timings.items()})
        return stats

    @staticmethod
    def _check_finite(values: torch.Tensor, rollouts: Rollouts, what: str, *, masked: bool = True,
                      offset: int = 0) -> None:
        """Raise :class:`TrainingError` naming the rows whose ``values`` ``[n, T]`` (rows ``offset ..``) are not
        finite (only the completion tokens count when ``masked``)."""
        bad = ~torch.isfinite(values)
        if masked:
            bad = bad & (rollouts.mask[offset : offset + values.shape[0]].to(values.device) > 0)
        bad_rows = (bad.any(dim=1).nonzero().flatten() + offset).tolist()
        if bad_rows:
            inputs = sorted({r // rollouts.num_generations for r in bad_rows})
            raise TrainingError(
                f"non-finite {what} in completion rows {bad_rows} (inputs {inputs} of the batch); the adaptation "
                "(generated weights) or the learning rate has probably diverged",
                rows=bad_rows,
                inputs=inputs,
            )


def _rows(values: torch.Tensor | None, start: int, stop: int) -> torch.Tensor | None:
    return None if values is None else values[start:stop]


def _now() -> float:
    """Wall clock after waiting for queued GPU work, so that timings measure the work and not its launch."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()
