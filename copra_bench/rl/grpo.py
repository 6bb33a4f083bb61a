"""GRPO maths: the configuration, group-relative advantages and the clipped-surrogate loss with a k3 KL term.

Follows TRL's ``GRPOTrainer`` (which VLM-R1 builds on), per completion token t of row n:

* ratio ``r = exp(logp - old_logp)``; surrogate ``-min(r * A_n, clip(r, 1 - eps, 1 + eps_high) * A_n)``;
* KL to the reference policy, TRL's k3 estimator ``exp(ref - logp) - (ref - logp) - 1`` (>= 0, 0 iff equal),
  added as ``beta * kl``;
* aggregation over tokens and rows by ``loss_type``: ``"grpo"`` (mean over each sequence's tokens, then mean over
  rows: VLM-R1 / TRL's original default), ``"bnpo"`` (mean over all completion tokens of the batch), ``"dr_grpo"``
  (sum over tokens / (rows * max_completion_length): Dr. GRPO's constant normaliser).

With ``num_iterations == 1`` the old policy is the current one (``old_logp = logp.detach()``): the ratio is 1 and
only its gradient matters. With more iterations the engine stores ``old_logp`` from the rollout policy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from copra_bench.errors import CopraError

__all__ = ["LOSS_TYPES", "GRPOConfig", "GRPOConfigError", "check_row_chunk", "group_advantages", "grpo_loss", "k3_kl",
           "row_chunks"]

LOSS_TYPES: tuple[str, ...] = ("grpo", "bnpo", "dr_grpo")

#: Added to the group standard deviation before dividing (VLM-R1 / TRL).
ADVANTAGE_EPS: float = 1e-4


class GRPOConfigError(CopraError, ValueError):
    """A GRPO option has an invalid value; the message names the option and what it accepts."""


@dataclass
class GRPOConfig:
    """GRPO options. Defaults are VLM-R1's (G = 8, temperature 1, beta 0.1 as in COPRA, eps 0.2, "grpo" loss).

    Attributes:
        num_generations: G, completions sampled per input (>= 2: the group std needs two samples).
        temperature: sampling temperature of the rollouts; log-probs are computed at the same temperature (TRL).
        top_p: nucleus sampling (1.0 = off). top_k: top-k sampling (0 = off).
        max_completion_length: new tokens per completion; also Dr. GRPO's normaliser.
        epsilon: lower clip range, ratio >= 1 - epsilon. epsilon_high: upper clip (None = epsilon; DAPO uses 0.28).
        beta: weight of the k3 KL to the reference policy (0 skips the reference forward).
        loss_type: "grpo" | "bnpo" | "dr_grpo" (see the module docstring).
        num_iterations: optimisation steps per batch of rollouts (mu in the GRPO paper); > 1 stores old log-probs.
        scale_rewards: divide the centred rewards by the group std (False = Dr. GRPO's unscaled advantage).
        reward_weights: one weight per reward function (None = all 1).
        loss_micro_batch: completion rows per old / reference / loss log-prob forward (None = all B * G rows at
            once); each micro-batch's backward runs before the next forward, so the loss phase keeps one
            micro-batch's activations. A divisor of ``num_generations`` or a multiple of it.
        rollout_batch_size: rows sampled per rollout ``generate`` call (None = all B * G); same rule.
    """

    num_generations: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_completion_length: int = 64
    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.1
    loss_type: str = "grpo"
    num_iterations: int = 1
    scale_rewards: bool = True
    reward_weights: Sequence[float] | None = None
    loss_micro_batch: int | None = None
    rollout_batch_size: int | None = None

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> GRPOConfigError:
            return GRPOConfigError(f"GRPO option {name}={getattr(self, name)!r} is invalid: {rule}")

        for name in ("num_generations", "top_k", "max_completion_length", "num_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad(name, "it must be an integer")
        if self.num_generations < 2:
            raise bad("num_generations", "it must be >= 2 (group-relative advantages need at least two samples)")
        if self.top_k < 0:
            raise bad("top_k", "it must be >= 0 (0 disables top-k)")
        if self.max_completion_length < 1:
            raise bad("max_completion_length", "it must be >= 1")
        if self.num_iterations < 1:
            raise bad("num_iterations", "it must be >= 1")
        for name in ("temperature", "top_p", "epsilon", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad(name, "it must be a finite number")
        if self.temperature <= 0:
            raise bad("temperature", "it must be > 0")
        if not 0 < self.top_p <= 1:
            raise bad("top_p", "it must be in (0, 1] (1 disables nucleus sampling)")
        if not 0 <= self.epsilon < 1:
            raise bad("epsilon", "it must be in [0, 1)")
        if self.epsilon_high is not None:
            if isinstance(self.epsilon_high, bool) or not isinstance(self.epsilon_high, (int, float)):
                raise bad("epsilon_high", "it must be a number or null (null = epsilon)")
            if not (math.isfinite(self.epsilon_high) and self.epsilon_high >= 0):
                raise bad("epsilon_high", "it must be a finite number >= 0")
        if self.beta < 0:
            raise bad("beta", "it must be >= 0 (0 disables the KL term and the reference forward)")
        if self.loss_type not in LOSS_TYPES:
            raise bad("loss_type", f"choose one of {', '.join(LOSS_TYPES)}")
        if not isinstance(self.scale_rewards, bool):
            raise bad("scale_rewards", "it must be true or false")
        if self.reward_weights is not None:
            weights = list(self.reward_weights)
            ok = all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in weights)
            if not weights or not ok:
                raise bad("reward_weights", "it must be a non-empty list of finite numbers, one per reward, or null")
            self.reward_weights = [float(w) for w in weights]
        for name in ("loss_micro_batch", "rollout_batch_size"):
            check_row_chunk(name, getattr(self, name), self.num_generations)

    @property
    def clip_high(self) -> float:
        """The upper clip range actually used (``epsilon_high`` or ``epsilon``)."""
        return float(self.epsilon if self.epsilon_high is None else self.epsilon_high)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_row_chunk(name: str, rows: int | None, num_generations: int) -> None:
    """A chunk of ``rows`` completion rows must cover whole groups (a multiple of G) or split one group evenly (a
    divisor of G), so that every chunk is "some inputs, each repeated r times" for the adaptation."""
    if rows is None:
        return
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise GRPOConfigError(f"GRPO option {name}={rows!r} is invalid: it must be an integer >= 1 or null (all rows)")
    if rows % num_generations and num_generations % rows:
        divisors = [d for d in range(1, num_generations + 1) if num_generations % d == 0]
        raise GRPOConfigError(
            f"GRPO option {name}={rows} does not divide the rows of a group of num_generations={num_generations} "
            f"completions, nor covers whole groups: set model.init_args.{name} to a divisor of num_generations "
            f"({', '.join(map(str, divisors))}) or a multiple of it ({num_generations}, {2 * num_generations}, ...)")


def row_chunks(num_rows: int, num_generations: int, rows: int | None) -> list[tuple[int, int]]:
    """``[start, stop)`` row ranges of at most ``rows`` rows (None = one chunk); each covers whole groups or part
    of one (see :func:`check_row_chunk`); the last one may hold fewer whole groups."""
    if rows is None or rows >= num_rows:
        return [(0, num_rows)]
    return [(s, min(s + rows, num_rows)) for s in range(0, num_rows, rows)]


def group_advantages(rewards: torch.Tensor, num_generations: int, scale: bool = True) -> torch.Tensor:
    """Group-relative advantages of ``rewards`` ``[N]`` laid out input-major (row n belongs to input n // G).

    ``(R - group mean) / (group std + 1e-4)``, with the *unbiased* (Bessel-corrected) std as ``torch.std`` in
    TRL / VLM-R1; ``scale=False`` returns ``R - group mean`` (Dr. GRPO). A group of equal rewards gives zeros.
    """
    rewards = torch.as_tensor(rewards)
    if rewards.dim() != 1 or num_generations < 1 or rewards.numel() % num_generations:
        raise GRPOConfigError(
            f"rewards must be a 1-D tensor whose length is a multiple of num_generations={num_generations}; "
            f"got shape {tuple(rewards.shape)}"
        )
    grouped = rewards.float().view(-1, num_generations)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True) + ADVANTAGE_EPS)
    return centred.reshape(-1)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || pi_ref): ``exp(ref - logp) - (ref - logp) - 1``."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: GRPOConfig,
    *,
    max_completion_length: int | None = None,
    num_rows: int | None = None,
    num_tokens: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO loss of per-token log-probs ``logp`` ``[N, T]`` (with grad) of completions with ``mask`` ``[N, T]``.

    Args:
        old_logp: log-probs under the rollout policy; None = ``logp.detach()`` (num_iterations == 1).
        ref_logp: log-probs under the reference policy; needed when ``config.beta > 0``.
        advantages: ``[N]``, one per completion.
        max_completion_length: Dr. GRPO's normaliser; None = ``config.max_completion_length`` (a policy whose
            completions have a fixed length, e.g. one answer token, passes its own).
        num_rows, num_tokens: when ``logp`` is one micro-batch of a larger batch, that batch's rows and completion
            tokens: the loss and stats are then this micro-batch's share, and the shares sum to the batch's values
            (None = this tensor is the whole batch).

    Returns:
        ``(loss, stats)``; stats (detached scalars): ``kl`` (token mean of the k3 KL, 0 when beta == 0),
        ``clip_ratio`` (fraction of tokens whose ratio is clipped in the direction that zeroes the gradient),
        ``clip_ratio_low``, ``clip_ratio_high``.
    """
    if logp.dim() != 2 or mask.shape != logp.shape or advantages.shape != logp.shape[:1]:
        raise GRPOConfigError(
            f"grpo_loss needs logp [N, T], mask [N, T] and advantages [N]; got {tuple(logp.shape)}, "
            f"{tuple(mask.shape)}, {tuple(advantages.shape)}"
        )
    if config.beta > 0 and ref_logp is None:
        raise GRPOConfigError("beta > 0 needs the reference log-probs (ref_logp)")
    mask = mask.to(logp.dtype)
    valid = mask > 0
    # Padding positions may hold anything (even inf): keep them out of every product so NaN cannot leak in.
    logp_v = torch.where(valid, logp, torch.zeros_like(logp))
    old = logp_v.detach() if old_logp is None else torch.where(valid, old_logp.to(logp.dtype), torch.zeros_like(logp))
    adv = advantages.to(logp.dtype).unsqueeze(1)

    ratio = torch.exp(logp_v - old)
    clipped = torch.clamp(ratio, 1 - config.epsilon, 1 + config.clip_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    if config.beta > 0:
        ref = torch.where(valid, ref_logp.to(logp.dtype), torch.zeros_like(logp))
        per_token_kl = k3_kl(logp_v, ref)
        per_token = per_token + config.beta * per_token_kl
    else:
        per_token_kl = torch.zeros_like(logp_v)

    tokens = mask.sum().clamp(min=1) if num_tokens is None else torch.as_tensor(num_tokens).to(mask).clamp(min=1)
    rows = logp.shape[0] if num_rows is None else int(num_rows)
    if config.loss_type == "grpo":
        per_row = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        loss = per_row.mean() if num_rows is None else per_row.sum() / rows
    elif config.loss_type == "bnpo":
        loss = (per_token * mask).sum() / tokens
    else:  # dr_grpo
        length = config.max_completion_length if max_completion_length is None else int(max_completion_length)
        loss = (per_token * mask).sum() / (rows * length)

    with torch.no_grad():
        low = ((ratio < 1 - config.epsilon) & (adv < 0)).to(mask.dtype)
        high = ((ratio > 1 + config.clip_high) & (adv > 0)).to(mask.dtype)
        stats = {
            "kl": (per_token_kl.detach() * mask).sum() / tokens,
            "clip_ratio_low": (low * mask).sum() / tokens,
            "clip_ratio_high": (high * mask).sum() / tokens,
        }
        stats["clip_ratio"] = stats["clip_ratio_low"] + stats["clip_ratio_high"]
    return loss, stats
