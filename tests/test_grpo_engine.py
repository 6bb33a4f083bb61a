"""The GRPO engine on a toy categorical policy (no VLM): experience, repeats, clipping, reward weights, non-finite
detection, and a short training run that must raise the reward."""

from __future__ import annotations

import pytest
import torch

from copra_bench.errors import CopraError
from copra_bench.rl import GRPOConfig, GRPOConfigError, GRPOEngine, RewardError, Rollouts, TrainingError, group_advantages

from .grpo_toy import BATCH, ToyAdaptation, ToyPolicy, match_reward


def test_reward_weights_and_names():
    engine = GRPOEngine(ToyPolicy(), GRPOConfig(num_generations=4, reward_weights=[2.0]), rewards=[match_reward])
    assert engine.reward_names == ["match_reward"]
    torch.manual_seed(0)
    exp = engine.make_experience(BATCH, None)
    torch.testing.assert_close(exp.total_rewards, 2.0 * exp.rewards["match_reward"])
    with pytest.raises(GRPOConfigError, match="reward_weights"):
        GRPOEngine(ToyPolicy(), GRPOConfig(reward_weights=[1.0, 1.0]), rewards=[match_reward])
    with pytest.raises(RewardError, match="registered rewards"):
        GRPOEngine(ToyPolicy(), GRPOConfig())  # the toy's default reward "match" is not registered


# ---------------------------------------------------------------- engine
def test_experience_contents_and_adaptation_repeats():
    policy, adapt = ToyPolicy(), ToyAdaptation(3, 4, 3)
    engine = GRPOEngine(policy, GRPOConfig(num_generations=4, num_iterations=2, beta=0.1), rewards=[match_reward])
    torch.manual_seed(0)
    exp = engine.make_experience(BATCH, adapt)
    assert exp.rollouts.completion_ids.shape == (12, 4) and exp.advantages.shape == (12,)
    assert exp.old_logp.shape == (12, 4) and exp.ref_logp.shape == (12, 4)
    assert set(exp.timings) == {"rollout_s", "reward_s", "old_s", "ref_s"}
    assert adapt.repeats_seen == [4, 4]  # rollout and old log-probs; the reference runs without it
    torch.testing.assert_close(exp.advantages, group_advantages(exp.total_rewards, 4))
    # delta = 0: adapted policy == reference, so the first loss has KL 0 and no clipping
    loss, stats = engine.loss(BATCH, exp, adapt)
    assert stats["kl"] == 0.0 and stats["clip_ratio"] == 0.0 and stats["completion_length"] == 4.0
    assert {"reward/match_reward", "reward/total", "timing/loss_forward_s", "timing/rollout_s"} <= set(stats)
    # one-iteration, beta-0 runs skip the extra forwards
    engine = GRPOEngine(policy, GRPOConfig(num_generations=4, beta=0.0), rewards=[match_reward])
    exp = engine.make_experience(BATCH, adapt)
    assert exp.old_logp is None and exp.ref_logp is None


def test_clipping_engages_on_the_second_iteration():
    torch.manual_seed(0)
    policy, adapt = ToyPolicy(), ToyAdaptation(3, 4, 3)
    engine = GRPOEngine(policy, GRPOConfig(num_generations=8, num_iterations=2, beta=0.0, epsilon=0.05),
                        rewards=[match_reward])
    opt = torch.optim.SGD(adapt.parameters(), lr=20.0)
    exp = engine.make_experience(BATCH, adapt)
    ratios = []
    for _ in range(2):
        loss, stats = engine.loss(BATCH, exp, adapt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ratios.append(stats["clip_ratio"])
    assert ratios[0] == 0.0 and ratios[1] > 0.0


def test_training_raises_the_reward():
    torch.manual_seed(0)
    policy, adapt = ToyPolicy(vocab=3), ToyAdaptation(3, 4, 3)
    engine = GRPOEngine(policy, GRPOConfig(num_generations=8, beta=0.01), rewards=[match_reward])
    opt = torch.optim.Adam(adapt.parameters(), lr=0.2)

    def mean_reward(adaptation) -> float:
        with torch.no_grad():
            logp = policy.completion_logprobs(None, _all_tokens(policy), adaptation=adaptation)
        return _expected_match(policy, logp)

    before = mean_reward(adapt)
    for _ in range(30):
        exp = engine.make_experience(BATCH, adapt)
        loss, _ = engine.loss(BATCH, exp, adapt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = mean_reward(adapt)
    assert after > before + 0.3, (before, after)


def _all_tokens(policy: ToyPolicy) -> Rollouts:
    """One row per (input, vocab token) repeated over all positions: enough to read each position's distribution."""
    v = policy.vocab
    ids = torch.arange(v).view(v, 1).expand(v, policy.length).repeat(3, 1)
    return Rollouts(ids, torch.ones(ids.shape), [""] * len(ids), torch.zeros(len(ids)), v, policy.length)


def _expected_match(policy: ToyPolicy, logp: torch.Tensor) -> float:
    """Expected match reward (probability of the label token, averaged over positions and inputs)."""
    probs = logp.exp().view(3, policy.vocab, policy.length)  # [input, token, position]
    return float(torch.stack([probs[i, label].mean() for i, label in enumerate(BATCH["label"].tolist())]).mean())


def test_non_finite_log_probs_name_the_rows():
    torch.manual_seed(0)
    policy, adapt = ToyPolicy(), ToyAdaptation(3, 4, 3)
    engine = GRPOEngine(policy, GRPOConfig(num_generations=2, beta=0.0), rewards=[match_reward])
    exp = engine.make_experience(BATCH, adapt)
    with torch.no_grad():
        adapt.delta[1, 2] = float("nan")  # input 1 diverges after the rollout
    with pytest.raises(TrainingError, match=r"rows \[2, 3\]") as info:
        engine.loss(BATCH, exp, adapt)
    assert info.value.inputs == [1] and info.value.rows == [2, 3] and isinstance(info.value, CopraError)


def test_non_finite_rewards_name_the_rows():
    def bad(completions, labels):
        return torch.tensor([float("nan") if i == 5 else 0.0 for i in range(len(completions))])

    engine = GRPOEngine(ToyPolicy(), GRPOConfig(num_generations=2), rewards=[bad])
    with pytest.raises(TrainingError, match="reward 'bad'") as info:
        engine.make_experience(BATCH, None)
    assert info.value.inputs == [2]
