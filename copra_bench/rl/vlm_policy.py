"""A frozen VLM as a GRPO policy, in two rollout modes.

``mode="format"`` (default; instruction-tuned backbones): the completion is free text. Each input's processor
outputs are repeated G times (input-major rows), G completions are sampled with the adaptation active at
``repeats=G``, and :meth:`VLMPolicy.completion_logprobs` runs one forward over prompt + completion for the
B * G rows, keeping logits for the completion positions only. Rewards: accuracy and format.

``mode="constrained"`` (backbones that cannot follow the ``<think>…</think><answer>…</answer>`` format yet, such
as the built-in random tiny models): the completion is the answer label alone. One forward of the B prompts ending
with the answer prefix (as :meth:`VLMBackbone.score`) at ``repeats=1`` gives the distribution over the two label
tokens ``"0"``/``"1"`` renormalised (``softmax(logits / temperature)`` over the pair); G labels are drawn from it
per input; the log-prob of a completion is the pair's ``log_softmax`` at its label (T = 1). Rollout and loss each
cost one forward of B rows, not B * G. The completion text is ``"<answer>k</answer>"`` so the accuracy reward
reads it like a free-text answer; the format reward does not apply (it would always be 0), so the default
rewards are accuracy alone. ``top_k`` / ``top_p`` are not applied to a two-token choice.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from copra_bench.vlm.backbone import BackboneError, VLMBackbone
from copra_bench.vlm.checkpointing import lm_checkpointing
from copra_bench.vlm.sequences import (
    NonFiniteLogitsError,
    completion_logprobs,
    expand_inputs,
    pad_completions,
    sample_completions,
    select_rows,
    shared_vision_outputs,
)

from .engine import Adaptation, Rollouts, TrainingError, restrict_adaptation
from .grpo import GRPOConfig, row_chunks

__all__ = ["MODES", "VLMPolicy"]

MODES: dict[str, tuple[str, ...]] = {"format": ("accuracy", "format"), "constrained": ("accuracy",)}


class VLMPolicy:
    """GRPO policy over a frozen :class:`VLMBackbone` (see the module docstring for the two modes).

    Args:
        backbone: the frozen VLM; adaptations act on it (e.g. hooks on its language model).
        mode: ``"format"`` or ``"constrained"``.
        reuse_vision: format mode, Qwen2/2.5-VL: encode each input's video once per batch and reuse the vision
            tokens in the B * G-row log-prob forwards (old, reference, loss) instead of re-encoding G copies.
            Valid when adaptations leave the vision encoder alone (COPRA, LM-only LoRA); set False otherwise.
        checkpointing: recompute each LM decoder layer in backward (:func:`~copra_bench.vlm.checkpointing.
            lm_checkpointing`) in the log-prob forwards that need a gradient.
    """

    def __init__(self, backbone: VLMBackbone, mode: str = "format", *, reuse_vision: bool = True,
                 checkpointing: bool = False) -> None:
        if mode not in MODES:
            raise BackboneError(f"unknown VLMPolicy mode {mode!r}; choose one of {', '.join(MODES)}")
        self.backbone = backbone
        self.mode = mode
        self.reuse_vision = bool(reuse_vision)
        self.checkpointing = bool(checkpointing)

    @property
    def default_rewards(self) -> tuple[str, ...]:
        """``("accuracy", "format")`` in format mode, ``("accuracy",)`` in constrained mode."""
        return MODES[self.mode]

    # ------------------------------------------------------------------ rollouts
    @torch.no_grad()
    def rollout(
        self, batch: dict, *, num_generations: int, adaptation: Adaptation | None, config: GRPOConfig
    ) -> Rollouts:
        """Sample ``num_generations`` completions per input of ``batch`` (``"frames"``, ``"label"``)."""
        labels = _labels(batch).repeat_interleave(num_generations)
        g = num_generations
        if self.mode == "constrained":
            inputs = self.backbone.prepare_inputs(batch["frames"], with_answer_prefix=True)
            n_in = int(inputs["input_ids"].shape[0])
            step = max(1, (config.rollout_batch_size or n_in * g) // g)  # inputs per forward
            pair = torch.cat([self._pair_logits(inputs, range(i, min(i + step, n_in)), adaptation)
                              for i in range(0, n_in, step)])
            bad = (~torch.isfinite(pair)).any(dim=1).nonzero().flatten().tolist()
            if bad:
                raise _nonfinite_rollout([r * num_generations + g for r in bad for g in range(num_generations)],
                                         num_generations)
            probs = torch.softmax(pair / config.temperature, dim=-1)
            choice = torch.multinomial(probs, num_generations, replacement=True).reshape(-1)  # [B * G], 0 or 1
            answer_ids = torch.tensor(self.backbone.answer_token_ids, device=choice.device)
            return Rollouts(
                completion_ids=answer_ids[choice].unsqueeze(1),
                mask=torch.ones(choice.shape[0], 1, device=choice.device),
                texts=[f"<answer>{int(k)}</answer>" for k in choice.tolist()],
                labels=labels.to(choice.device),
                num_generations=num_generations,
                max_length=1,
                temperature=float(config.temperature),
                extras={"inputs": inputs, "choice": choice},
            )
        inputs, frames = self.backbone._prepare(batch["frames"], with_answer_prefix=False)
        expanded = expand_inputs(inputs, frames, num_generations)
        row_frames = [f for f in frames for _ in range(g)]
        parts = []
        for start, stop in row_chunks(len(row_frames), g, config.rollout_batch_size):
            try:
                with _adapted(restrict_adaptation(adaptation, range(start // g, -(-stop // g)), len(frames)),
                              min(g, stop - start)):
                    ids, mask, _ = sample_completions(
                        self.backbone,
                        select_rows(expanded, start, stop, row_frames),
                        max_new_tokens=config.max_completion_length,
                        temperature=config.temperature,
                        top_k=config.top_k,
                        top_p=config.top_p,
                    )
            except NonFiniteLogitsError as err:
                raise _nonfinite_rollout([start + r for r in err.rows], num_generations) from err
            parts.append((ids, mask))
        ids, mask = pad_completions(parts, self.backbone.tokenizer.pad_token_id)
        vision = shared_vision_outputs(self.backbone, inputs, num_generations) if self.reuse_vision else None
        if vision is not None:  # the log-prob forwards read the shared vision tokens: drop the G pixel copies
            expanded = {k: v for k, v in expanded.items() if k != "pixel_values_videos"}
        texts = self.backbone.tokenizer.batch_decode(
            [row[: int(m.sum())] for row, m in zip(ids, mask)],
            skip_special_tokens=True,
            clean_up_tokenization_spaces=False,
        )
        return Rollouts(
            completion_ids=ids,
            mask=mask,
            texts=texts,
            labels=labels.to(ids.device),
            num_generations=num_generations,
            max_length=int(config.max_completion_length),
            temperature=float(config.temperature),
            extras={"inputs": expanded, "vision": vision, "row_frames": row_frames},
        )

    # ------------------------------------------------------------------ log-probs
    def completion_logprobs(self, batch: dict, rollouts: Rollouts, *, adaptation: Adaptation | None,
                            rows: tuple[int, int] | None = None, inside=None) -> Any:
        """Per-token log-probs ``[n, T]`` (float32) of the rollouts' completions (rows ``[start, stop)`` of
        ``rows``; None = all) under ``adaptation`` (None = the frozen reference); differentiable through the
        adaptation when grad is enabled. ``inside(logp)`` runs while the adaptation is active (its result is
        returned): the engine's micro-batch backward, which recomputed (checkpointed) layers need adapted."""
        g, n = rollouts.num_generations, rollouts.num_rows
        start, stop = rows or (0, n)
        inputs_of = range(start // g, -(-stop // g))
        sub = restrict_adaptation(adaptation, inputs_of, n // g)
        finish = inside or (lambda logp: logp)
        checkpointed = lm_checkpointing(self.backbone, active=self.checkpointing and torch.is_grad_enabled())
        if self.mode == "constrained":
            inputs = rollouts.extras.get("inputs")
            if inputs is None:
                inputs = self.backbone.prepare_inputs(batch["frames"], with_answer_prefix=True)
            choice = rollouts.extras.get("choice")
            if choice is None:
                choice = (rollouts.completion_ids[:, 0] == self.backbone.answer_token_ids[1]).long()
            first = inputs_of.start * g
            with _adapted(sub, 1), checkpointed:
                pair = self._label_logits(select_rows(inputs, inputs_of.start, inputs_of.stop))
                logp_pair = torch.log_softmax(pair / rollouts.temperature, dim=-1)  # [inputs, 2]
                picked = logp_pair.repeat_interleave(g, dim=0)[start - first : stop - first]
                return finish(picked.gather(1, choice[start:stop].to(pair.device).view(-1, 1)))
        inputs, vision = rollouts.extras.get("inputs"), rollouts.extras.get("vision")
        row_frames = rollouts.extras.get("row_frames")
        if inputs is None:
            prompt, frames = self.backbone._prepare(batch["frames"], with_answer_prefix=False)
            inputs = expand_inputs(prompt, frames, g)
            row_frames = [f for f in frames for _ in range(g)]
            vision = shared_vision_outputs(self.backbone, prompt, g) if self.reuse_vision else None
        if rows is not None:
            inputs = select_rows(inputs, start, stop, row_frames)
            vision = None if vision is None else select_rows(vision, start, stop)
        with _adapted(sub, min(g, stop - start)), checkpointed:
            return finish(completion_logprobs(
                self.backbone,
                inputs,
                rollouts.completion_ids[start:stop],
                rollouts.mask[start:stop],
                temperature=rollouts.temperature,
                vision_outputs=vision,
            ))

    def _pair_logits(self, inputs: Any, inputs_of: range, adaptation: Adaptation | None) -> torch.Tensor:
        """:meth:`_label_logits` of inputs ``inputs_of`` under their adaptation (rollouts: no grad)."""
        n_in = int(inputs["input_ids"].shape[0])
        with _adapted(restrict_adaptation(adaptation, inputs_of, n_in), 1):
            return self._label_logits(select_rows(inputs, inputs_of.start, inputs_of.stop))

    def _label_logits(self, inputs: Any) -> torch.Tensor:
        """``[B, 2]`` float32 logits of ``"0"`` and ``"1"`` at the last position (one forward, last logits only)."""
        out = self.backbone.model(**inputs, logits_to_keep=1, use_cache=False)
        id0, id1 = self.backbone.answer_token_ids
        last = out.logits[:, -1, :]
        return torch.stack((last[:, id0], last[:, id1]), dim=-1).float()


def _nonfinite_rollout(rows: list[int], num_generations: int) -> TrainingError:
    inputs = sorted({r // num_generations for r in rows})
    return TrainingError(
        f"non-finite logits while sampling rollouts: rows {rows} (inputs {inputs} of the batch); the adaptation "
        "(generated weights) or the learning rate has probably diverged",
        rows=rows,
        inputs=inputs,
    )


def _adapted(adaptation: Adaptation | None, repeats: int):
    return contextlib.nullcontext() if adaptation is None else adaptation(repeats)


def _labels(batch: dict) -> torch.Tensor:
    if "label" not in batch:
        raise BackboneError(f"a GRPO batch needs 'frames' and 'label'; got keys {sorted(batch)}")
    return torch.as_tensor(batch["label"]).long().reshape(-1).cpu()
