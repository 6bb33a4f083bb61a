"""GRPO maths: config checks, group advantages, hand-computed losses, KL, clipping and the built-in rewards
(the engine on a toy policy is in test_grpo_engine.py)."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from copra_bench.errors import CopraError
from copra_bench.rl import (
    REWARDS,
    GRPOConfig,
    GRPOConfigError,
    RewardError,
    accuracy_reward,
    format_reward,
    group_advantages,
    grpo_loss,
    k3_kl,
    register_reward,
    resolve_rewards,
)



# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_generations=1),
        dict(num_generations=2.0),
        dict(temperature=0.0),
        dict(top_p=0.0),
        dict(top_k=-1),
        dict(max_completion_length=0),
        dict(epsilon=-0.1),
        dict(epsilon_high=-1.0),
        dict(beta=-0.01),
        dict(beta=float("nan")),
        dict(loss_type="ppo"),
        dict(num_iterations=0),
        dict(scale_rewards="yes"),
        dict(reward_weights=[]),
        dict(reward_weights=[1.0, float("inf")]),
    ],
)
def test_config_rejects_bad_values(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(GRPOConfigError, match=name) as info:
        GRPOConfig(**kwargs)
    assert isinstance(info.value, CopraError)


def test_config_defaults_are_vlm_r1():
    cfg = GRPOConfig()
    assert (cfg.num_generations, cfg.temperature, cfg.beta, cfg.epsilon, cfg.loss_type) == (8, 1.0, 0.1, 0.2, "grpo")
    assert cfg.clip_high == 0.2 and GRPOConfig(epsilon_high=0.28).clip_high == 0.28
    assert GRPOConfig(**cfg.to_dict()) == cfg


# ---------------------------------------------------------------- advantages
def test_group_advantages_match_a_loop_with_unbiased_std():
    rewards = torch.tensor([1.0, 0.0, 2.0, 1.0, 0.5, 0.5, 0.5, 3.0])
    for scale in (True, False):
        got = group_advantages(rewards, 4, scale=scale)
        expected = []
        for start in (0, 4):
            group = rewards[start : start + 4].tolist()
            mean, std = statistics.mean(group), statistics.stdev(group)  # Bessel-corrected, as torch.std in TRL
            expected += [(r - mean) / (std + 1e-4) if scale else r - mean for r in group]
        torch.testing.assert_close(got, torch.tensor(expected), atol=1e-6, rtol=1e-6)


def test_equal_rewards_give_zero_advantage():
    assert torch.equal(group_advantages(torch.full((6,), 0.7), 3), torch.zeros(6))


def test_group_advantages_bad_shape():
    with pytest.raises(GRPOConfigError):
        group_advantages(torch.zeros(5), 2)


# ---------------------------------------------------------------- loss
def _hand_loss(logp, old, ref, adv, mask, cfg, max_len):
    """The GRPO loss written out token by token with math.exp."""
    rows = []
    for n in range(len(logp)):
        per_tok = []
        for t in range(len(logp[n])):
            if not mask[n][t]:
                continue
            ratio = math.exp(logp[n][t] - old[n][t])
            clipped = min(max(ratio, 1 - cfg.epsilon), 1 + cfg.clip_high)
            value = -min(ratio * adv[n], clipped * adv[n])
            d = ref[n][t] - logp[n][t]
            value += cfg.beta * (math.exp(d) - d - 1)
            per_tok.append(value)
        rows.append(per_tok)
    if cfg.loss_type == "grpo":
        return sum(sum(r) / max(len(r), 1) for r in rows) / len(rows)
    if cfg.loss_type == "bnpo":
        return sum(sum(r) for r in rows) / max(sum(len(r) for r in rows), 1)
    return sum(sum(r) for r in rows) / (len(rows) * max_len)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_loss_equals_hand_computation(loss_type, beta):
    g = torch.Generator().manual_seed(1)
    logp = -torch.rand(4, 5, generator=g, dtype=torch.float64) * 2
    old = logp + 0.3 * torch.randn(4, 5, generator=g, dtype=torch.float64)  # ratios in and out of the clip range
    ref = logp + 0.2 * torch.randn(4, 5, generator=g, dtype=torch.float64)
    adv = torch.tensor([1.5, -0.5, 0.0, -1.0], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.float64)
    cfg = GRPOConfig(loss_type=loss_type, beta=beta, epsilon=0.2, epsilon_high=0.28, max_completion_length=7)
    loss, stats = grpo_loss(logp, old, ref, adv, mask, cfg)
    expected = _hand_loss(logp.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist(), cfg, 7)
    assert loss.item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    kl_tokens = [math.exp(r - lp) - (r - lp) - 1 for lr, rr, mr in zip(logp.tolist(), ref.tolist(), mask.tolist())
                 for lp, r, m in zip(lr, rr, mr) if m]
    assert stats["kl"].item() == pytest.approx(sum(kl_tokens) / len(kl_tokens) if beta else 0.0, rel=1e-12)


def test_dr_grpo_normaliser_override():
    logp, adv, mask = -torch.ones(2, 1), torch.tensor([1.0, -1.0]), torch.ones(2, 1)
    cfg = GRPOConfig(loss_type="dr_grpo", beta=0.0, max_completion_length=64)
    a, _ = grpo_loss(logp, None, None, adv + 1, mask, cfg)
    b, _ = grpo_loss(logp, None, None, adv + 1, mask, cfg, max_completion_length=1)
    assert b.item() == pytest.approx(64 * a.item())


def test_equal_rewards_give_zero_policy_gradient():
    logits = torch.randn(4, 3, 5, requires_grad=True)
    ids = torch.randint(0, 5, (4, 3))
    logp = torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    adv = group_advantages(torch.ones(4), 2)
    loss, stats = grpo_loss(logp, None, logp.detach(), adv, torch.ones(4, 3), GRPOConfig(beta=0.1))
    loss.backward()
    assert loss.item() == 0.0 and stats["kl"].item() == 0.0
    assert torch.count_nonzero(logits.grad) == 0
    # and a non-trivial advantage does give a gradient (the test above can fail)
    logits.grad = None
    logp = torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    loss, _ = grpo_loss(logp, None, logp.detach(), group_advantages(torch.tensor([1.0, 0, 0, 1]), 2),
                        torch.ones(4, 3), GRPOConfig(beta=0.1))
    loss.backward()
    assert torch.count_nonzero(logits.grad) > 0


def test_kl_zero_iff_policy_equals_reference():
    logp = -torch.rand(3, 4)
    assert torch.equal(k3_kl(logp, logp), torch.zeros(3, 4))
    assert bool((k3_kl(logp, logp + 0.1 * torch.randn(3, 4)) > 0).all())


def test_clipped_tokens_get_no_gradient():
    old = torch.zeros(1, 4)
    logp = torch.tensor([[0.5, 0.1, -0.5, -0.1]], requires_grad=True)  # ratios e^.5, e^.1, e^-.5, e^-.1
    cfg = GRPOConfig(beta=0.0, epsilon=0.2, loss_type="bnpo")
    # positive advantage: the high side is clipped (token 0) ...
    loss, stats = grpo_loss(logp, old, None, torch.tensor([1.0]), torch.ones(1, 4), cfg)
    loss.backward()
    assert logp.grad[0, 0] == 0 and bool((logp.grad[0, 1:] != 0).all())
    assert stats["clip_ratio_high"].item() == 0.25 and stats["clip_ratio_low"].item() == 0.0
    # ... negative advantage: the low side (token 2)
    logp.grad = None
    loss, stats = grpo_loss(logp, old, None, torch.tensor([-1.0]), torch.ones(1, 4), cfg)
    loss.backward()
    assert logp.grad[0, 2] == 0 and logp.grad[0, 0] != 0
    assert stats["clip_ratio_low"].item() == 0.25 and stats["clip_ratio"].item() == 0.25


def test_padding_values_do_not_leak():
    logp = torch.tensor([[-1.0, float("nan")], [-0.5, -0.2]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    loss, _ = grpo_loss(logp, None, logp.clone(), torch.tensor([1.0, -1.0]), mask, GRPOConfig())
    assert torch.isfinite(loss)


# ---------------------------------------------------------------- rewards
def test_builtin_rewards():
    texts = ["<think>a</think><answer>1</answer>", "<answer>0</answer>", "<think>x</think> <answer>yes</answer>", "1"]
    labels = [1, 1, 0, 1]
    assert accuracy_reward(texts, labels).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert format_reward(texts, labels).tolist() == [1.0, 0.0, 1.0, 0.0]
    assert REWARDS["accuracy"] is accuracy_reward and REWARDS["format"] is format_reward


def test_reward_registry_errors():
    with pytest.raises(RewardError, match="accuracy, format"):
        resolve_rewards(["acuracy"])
    with pytest.raises(RewardError):
        resolve_rewards([])
    with pytest.raises(RewardError, match="unique"):
        resolve_rewards(["accuracy", "accuracy"])
    with pytest.raises(RewardError, match="already registered"):
        register_reward("accuracy")(lambda c, labels: None)
