"""A toy categorical policy for the GRPO engine tests: no VLM, a linear adaptation whose repeats are visible."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from copra_bench.rl import Rollouts

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
