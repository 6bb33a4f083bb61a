"""``GRPOMethod``: a benchmark method trained with the GRPO engine (COPRA and the static LoRA + GRPO control).

Both share every GRPO setting (rollout mode, G, sampling, beta, epsilon, loss type, iterations, rewards) and the
training step; they differ only in the *adaptation* whose parameters GRPO trains: a LoRA generated per input
(COPRA) or one LoRA shared by all inputs (the paper's Table 3 control). A subclass writes
:meth:`GRPOMethod.grpo_adaptations`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from copra_bench.trained_module import TrainedModule
from copra_bench.vlm.checkpointing import check_checkpointing
from copra_bench.vlm.loading import checkpoint_family

from .engine import Adaptation, GRPOEngine, TrainingError
from .grpo import GRPOConfig
from .rewards import resolve_rewards
from .vlm_policy import VLMPolicy


class GRPOMethod(TrainedModule):
    """A :class:`~copra_bench.trained_module.TrainedModule` whose objective is GRPO on the video label.

    Args:
        rollout_mode: ``format`` (completions ``<think>..</think><answer>0|1</answer>``, rewards accuracy + format;
            for instruction-tuned backbones) or ``constrained`` (the completion is the answer label alone, drawn from
            the model's distribution over the two label tokens; for backbones that cannot follow the format, e.g.
            the built-in tiny random model).
        num_generations: ``G`` rollouts per training input.
        temperature, top_p, top_k: Rollout sampling.
        max_completion_length: Tokens per rollout (``format`` mode).
        beta: Weight of the per-token k3 KL to the frozen model.
        epsilon: Clipping range of the surrogate.
        loss_type: ``grpo`` (VLM-R1: token mean per sequence, then batch mean), ``bnpo`` (token mean) or ``dr_grpo``.
        num_iterations: Optimisation steps per batch of rollouts (old log-probs are stored).
        rewards: Reward names (default: by rollout mode). See :mod:`copra_bench.rl.rewards`.
        loss_micro_batch: Completion rows per old / reference / loss forward, each micro-batch's backward before the
            next (None: all B * G rows at once). Bounds the loss phase's activations; a divisor or multiple of G.
            The gradient is the same (to float rounding) for any value. See docs/memory.md.
        rollout_batch_size: Rows sampled per rollout ``generate`` call (None: all B * G); a divisor or multiple of G.
        lm_checkpointing: Recompute each LM decoder layer in backward (the frozen backbone stays in eval mode):
            ~1/3 more loss-phase compute for the activations of one layer instead of all of them.
        **kwargs: :class:`~copra_bench.trained_module.TrainedModule` arguments (lr, epochs, ...) and the
            :class:`~copra_bench.bench_module.BenchModule` ones (backbone, dtype, ...).
    """

    def __init__(self, *, rollout_mode: Literal["format", "constrained"] = "format", num_generations: int = 8,
                 temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, max_completion_length: int = 64,
                 beta: float = 0.1, epsilon: float = 0.2, loss_type: str = "grpo", num_iterations: int = 1,
                 rewards: Sequence[str] | None = None, loss_micro_batch: int | None = None,
                 rollout_batch_size: int | None = None, lm_checkpointing: bool = False, **kwargs: Any) -> None:
        # Checked before the backbone loads (minutes for a 7B checkpoint): bad settings fail at config time.
        config = GRPOConfig(num_generations=num_generations, temperature=temperature, top_p=top_p, top_k=top_k,
                            max_completion_length=max_completion_length, epsilon=epsilon, beta=beta,
                            loss_type=loss_type, num_iterations=num_iterations, loss_micro_batch=loss_micro_batch,
                            rollout_batch_size=rollout_batch_size)
        if rewards is not None:
            resolve_rewards(list(rewards))
        if lm_checkpointing:
            check_checkpointing(checkpoint_family(kwargs.get("backbone", "tiny-qwen2-vl")))
        super().__init__(**kwargs)
        self.grpo_config = config
        self.steps_per_batch = self.grpo_config.num_iterations
        self.engine = GRPOEngine(VLMPolicy(self.backbone, mode=rollout_mode, checkpointing=lm_checkpointing),
                                 self.grpo_config, None if rewards is None else list(rewards))

    def grpo_adaptations(self, batch: dict) -> tuple[Adaptation, Callable[[int], Adaptation]]:
        """The adaptation the rollouts are sampled under (no grad needed) and, per optimisation iteration, the one
        the loss differentiates. GRPO's pi_old is pi_theta at the first iteration, so both describe the same
        policy there."""
        raise NotImplementedError

    def training_step(self, batch: dict, batch_idx: int) -> None:
        stats: dict[str, Any] = {}
        where: dict[str, Any] = {"phase": "generator / rollout"}
        try:
            rollout_adaptation, loss_adaptation = self.grpo_adaptations(batch)
            experience = self.engine.make_experience(batch, rollout_adaptation)
            where.update(phase="loss", experience=experience)
            for iteration in range(self.grpo_config.num_iterations):
                adaptation, result = loss_adaptation(iteration), {}

                def backward(adaptation=adaptation, result=result) -> None:
                    # micro-batched forward + backward, each inside its adaptation (see GRPOEngine.backward)
                    _, result["stats"] = self.engine.backward(batch, experience, adaptation,
                                                              backward=self.manual_backward)

                self.optimise(None, batch, backward=backward)
                stats = result["stats"]
        except TrainingError as err:
            if "global step" in str(err):
                raise
            self.stop(str(err), batch, err.inputs)
        except torch.OutOfMemoryError as err:
            raise TrainingError(self._out_of_memory(batch, where)) from err
        self.log_step(stats, batch)

    def _out_of_memory(self, batch: dict, where: dict[str, Any]) -> str:
        """What ran out of memory (step, phase, rows and tokens) and the keys that lower it (docs/memory.md)."""
        cfg = self.grpo_config
        inputs = len(batch["label"])
        rows = inputs * cfg.num_generations
        experience = where.get("experience")
        tokens = "prompt length unknown (before the rollouts finished)"
        if experience is not None:
            prompt = experience.rollouts.extras.get("inputs", {}).get("input_ids")
            length = int(experience.rollouts.completion_ids.shape[1])
            tokens = f"{int(prompt.shape[1]) if prompt is not None else '?'} prompt + {length} completion tokens"
        micro = cfg.loss_micro_batch or rows
        return (f"out of GPU memory at global step {self.global_step} in the {where['phase']} phase: {inputs} "
                f"inputs x G={cfg.num_generations} = {rows} rows of {tokens}; loss_micro_batch={micro}, "
                f"rollout_batch_size={cfg.rollout_batch_size or rows}, lm_checkpointing={self.engine.policy.checkpointing}. "
                f"To lower memory: model.init_args.loss_micro_batch (e.g. {max(1, micro // 2)}), "
                "model.init_args.lm_checkpointing: true, model.init_args.rollout_batch_size (rollout phase), "
                "the pixel budget model.init_args.backbone_options.video_kwargs.size.longest_edge, or "
                "data.init_args.batch_size (docs/memory.md). Training stopped before the optimiser step; the last "
                "checkpoint is intact: resume with --ckpt_path last.")
