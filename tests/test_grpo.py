"""GRPO maths and engine on a toy categorical policy (no VLM): hand-computed losses, advantages, KL, clipping,
rewards, non-finite detection, and a short training run that must raise the reward."""

from __future__ import annotations

import contextlib
import math
import statistics

import pytest
import torch
from torch import nn

from copra_bench.errors import CopraError
from copra_bench.rl import (
    REWARDS,
    GRPOConfig,
    GRPOConfigError,
    GRPOEngine,
    RewardError,
    Rollouts,
    TrainingError,
    accuracy_reward,
    format_reward,
    group_advantages,
    grpo_loss,
    k3_kl,
    register_reward,
    resolve_rewards,
)


# ---------------------------------------------------------------- a toy policy
class ToyAdaptation(nn.Module):
    """Per-input trainable logits added to the toy policy's frozen logits (rows input-major, like COPRA)."""

    def __init__(self, num_inputs: int, length: int, vocab: int) -> None:
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(num_inputs, length, vocab))
        self.repeats_seen: list[int] = []

    def forward(self, repeats: int):  # type: ignore[override]
        self.repeats_seen.append(repeats)
        return _activate(self, repeats)


@contextlib.contextmanager
def _activate(adaptation: ToyAdaptation, repeats: int):
    ToyPolicy.active = (adaptation, repeats)
    try:
        yield
    finally:
        ToyPolicy.active = None


class ToyPolicy:
    """Independent categorical tokens: row n's logits = frozen base[n // G] (+ adaptation delta)."""

    active: tuple[ToyAdaptation, int] | None = None
    default_rewards = ("match",)

    def __init__(self, num_inputs: int = 3, length: int = 4, vocab: int = 3, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.base = torch.randn(num_inputs, length, vocab, generator=g)
        self.length, self.vocab = length, vocab

    def _logits(self, g: int, adaptation) -> torch.Tensor:
        logits = self.base.repeat_interleave(g, dim=0)
        ctx = contextlib.nullcontext() if adaptation is None else adaptation(g)
        with ctx:
            if ToyPolicy.active is not None:
                module, repeats = ToyPolicy.active
                logits = logits + module.delta.repeat_interleave(repeats, dim=0)
        return logits

    def rollout(self, batch, *, num_generations, adaptation, config):
        with torch.no_grad():
            probs = torch.softmax(self._logits(num_generations, adaptation) / config.temperature, dim=-1)
            ids = torch.multinomial(probs.reshape(-1, self.vocab), 1).reshape(-1, self.length)
        return Rollouts(
            completion_ids=ids,
            mask=torch.ones(ids.shape),
            texts=["".join(str(t) for t in row) for row in ids.tolist()],
            labels=torch.as_tensor(batch["label"]).repeat_interleave(num_generations),
            num_generations=num_generations,
            max_length=self.length,
            temperature=config.temperature,
        )

    def completion_logprobs(self, batch, rollouts, *, adaptation):
        logits = self._logits(rollouts.num_generations, adaptation) / rollouts.temperature
        return torch.log_softmax(logits, dim=-1).gather(-1, rollouts.completion_ids.unsqueeze(-1)).squeeze(-1)


def match_reward(completions, labels):
    """Fraction of the completion's tokens equal to the label digit."""
    return torch.tensor([c.count(str(label)) / len(c) for c, label in zip(completions, labels)])


BATCH = {"frames": None, "label": torch.tensor([0, 1, 2])}


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
