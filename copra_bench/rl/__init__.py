"""GRPO engine: group-relative policy optimisation for any policy that samples and scores completions.

See :mod:`copra_bench.rl.engine` for the adaptation protocol and a training step, :mod:`copra_bench.rl.grpo` for
the maths, :mod:`copra_bench.rl.rewards` for the reward registry and :mod:`copra_bench.rl.vlm_policy` for a VLM.
"""

from __future__ import annotations

from .adaptations import LinearBiasAdaptation
from .engine import Adaptation, Experience, GRPOEngine, Policy, Rollouts, TrainingError
from .grpo import LOSS_TYPES, GRPOConfig, GRPOConfigError, group_advantages, grpo_loss, k3_kl
from .rewards import REWARDS, RewardError, accuracy_reward, format_reward, get_reward, register_reward, resolve_rewards
from .vlm_policy import VLMPolicy

__all__ = [
    "LOSS_TYPES",
    "REWARDS",
    "Adaptation",
    "Experience",
    "GRPOConfig",
    "GRPOConfigError",
    "GRPOEngine",
    "LinearBiasAdaptation",
    "Policy",
    "RewardError",
    "Rollouts",
    "TrainingError",
    "VLMPolicy",
    "accuracy_reward",
    "format_reward",
    "get_reward",
    "group_advantages",
    "grpo_loss",
    "k3_kl",
    "register_reward",
    "resolve_rewards",
]
