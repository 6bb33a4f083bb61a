"""COPRA as a method of the benchmark: the generator trained with GRPO, tested with the shared protocol.

Only what differs from the other methods lives here: how a batch is scored (a LoRA generated per input — per window,
per chunk or per video — injected into the frozen VLM) and the GRPO training step. Test/predict loops, frame
assembly, metrics and checkpoint filtering come from :class:`~copra_bench.bench_module.BenchModule`.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

import torch

from copra_bench.bench_module import BenchModule
from copra_bench.copra.layout import LoRADeltas
from copra_bench.copra.torch_model import COPRAModel
from copra_bench.errors import CopraError
from copra_bench.rl import GRPOConfig, GRPOEngine, TrainingError, VLMPolicy
from copra_bench.vlm import ScoreOutput

Granularity = Literal["window", "chunk", "video"]

# The frozen VLM stays in eval mode on purpose (no dropout in the policy, as in VLM-R1), and COPRA's checkpoints are
# meant to hold the state after the step they are named after: Lightning's warnings about both do not apply.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization and every_n_train_steps")


class COPRA(BenchModule):
    """Conditional parameter adaptation (arXiv 2605.15325): a per-input LoRA written by a generator, trained with GRPO.

    Args:
        rank: LoRA rank r of the generated updates.
        alpha: LoRA alpha (scale = alpha / rank).
        target_modules: Language-model Linear layers that get an update: any of q, k, v, o, gate, up, down.
        layers: Indices of the language-model layers to adapt (``None``: all).
        generator_depth: Generator blocks (``None``: half the language model's depth, as in the paper).
        generator_width: Width of the parameter tokens (512 in the paper).
        generator_heads: Attention heads of the generator.
        segment_size: ``d_seg``, the width of one rank-anchored slice (a token covers ``r x d_seg`` LoRA values).
        global_latent: Start the parameter tokens from a learned dataset-level latent prior (paper Table 7).
        granularity: Inference unit one LoRA is generated for: each ``window``, each ``chunk`` of
            ``chunk_seconds`` (reused by every window whose centre falls in it), or the whole ``video``.
        chunk_seconds: Chunk length for ``granularity: chunk`` (paper Table 6: 120 s best).
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
        lr: AdamW learning rate (paper: 1e-6 on 8B backbones), linearly decayed to 0 over training.
        weight_decay: AdamW weight decay.
        grad_clip: Gradient-norm clip (paper: 1.0).
        warmup_steps: Linear warm-up steps before the decay.
        condition_cache_size: Generated LoRAs kept at test time for chunk/video granularity (per unit, LRU).
        generator_checkpointing: Recompute generator blocks in backward (saves memory on 7B-sized layouts).
        epochs: Passes over the training videos, COPRA's Trainer default ``max_epochs`` (the paper trains one;
            ``trainer.max_epochs`` in a config overrides it).
        **kwargs: :class:`~copra_bench.bench_module.BenchModule` arguments (backbone, dtype, ...).
    """

    method_name = "copra"

    def __init__(self, *, rank: int = 8, alpha: float = 16.0,
                 target_modules: Sequence[str] = ("q", "k", "v", "o", "gate", "up", "down"),
                 layers: Sequence[int] | None = None, generator_depth: int | None = None, generator_width: int = 512,
                 generator_heads: int = 8, segment_size: int = 512, global_latent: bool = True,
                 granularity: Granularity = "window", chunk_seconds: float = 120.0,
                 rollout_mode: Literal["format", "constrained"] = "format", num_generations: int = 8,
                 temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, max_completion_length: int = 64,
                 beta: float = 0.1, epsilon: float = 0.2, loss_type: str = "grpo", num_iterations: int = 1,
                 rewards: Sequence[str] | None = None, lr: float = 1e-6, weight_decay: float = 0.0,
                 grad_clip: float = 1.0, warmup_steps: int = 0, condition_cache_size: int = 16,
                 generator_checkpointing: bool = False, epochs: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if granularity not in ("window", "chunk", "video"):
            raise CopraError(f"model.granularity must be 'window', 'chunk' or 'video', got {granularity!r}")
        if granularity == "chunk" and not chunk_seconds > 0:
            raise CopraError(f"model.chunk_seconds must be > 0 for granularity 'chunk', got {chunk_seconds}")
        self.automatic_optimization = False
        self.model = COPRAModel(self.backbone, rank=rank, alpha=alpha, target_modules=list(target_modules),
                                layers=None if layers is None else list(layers), depth=generator_depth,
                                width=generator_width, heads=generator_heads, segment_size=segment_size,
                                global_latent=global_latent, checkpointing=generator_checkpointing)
        self.grpo_config = GRPOConfig(num_generations=num_generations, temperature=temperature, top_p=top_p,
                                      top_k=top_k, max_completion_length=max_completion_length, epsilon=epsilon,
                                      beta=beta, loss_type=loss_type, num_iterations=num_iterations)
        self.engine = GRPOEngine(VLMPolicy(self.backbone, mode=rollout_mode), self.grpo_config,
                                 None if rewards is None else list(rewards))
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._dataloader_idx = 0

    # ------------------------------------------------------------------------------------------------- settings
    @property
    def trainer_arguments(self) -> dict[str, Any]:
        return {"max_epochs": self.hparams.epochs}

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "set_conditioning"):
            datamodule.set_conditioning(self.hparams.granularity, chunk_seconds=self.hparams.chunk_seconds)
        elif self.hparams.granularity != "window":
            raise CopraError(f"granularity {self.hparams.granularity!r} needs a DataModule with set_conditioning()")

    def parameter_counts(self) -> dict[str, int]:
        return {**super().parameter_counts(), "generator_params": self.model.generator_parameters(),
                "generated_lora_values": self.model.generated_values()}

    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.hparams.lr, betas=(0.9, 0.999), eps=1e-8,
                                      weight_decay=self.hparams.weight_decay)
        warmup = self.hparams.warmup_steps
        total: list[int] = []

        def linear(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            if step == 0:
                return 1.0
            # Known only once the fit loop has set up its data: asking for it here, in configure_optimizers, would
            # build the train loader before a resumed checkpoint's loader position is restored.
            if not total:
                total.append(max(int(self.trainer.estimated_stepping_batches), 1) * self.hparams.num_iterations)
            return max(0.0, 1.0 - (step - warmup) / max(total[0] - warmup, 1))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---------------------------------------------------------------------------------------------------- scoring
    def score_windows(self, frames: Any) -> ScoreOutput:
        return self.model.score_self_conditioned(frames, return_features=self.keep_features)

    def score_batch(self, batch: dict) -> ScoreOutput:
        condition = batch.get("condition_frames")
        if condition is None:
            return self.score_windows(batch["frames"])
        keys = [(self._dataloader_idx, int(v), int(c))
                for v, c in zip(batch["video_index"].tolist(), batch["condition_key"].tolist(), strict=True)]
        units = {key: self._cache[key] for key in keys if key in self._cache}
        first: dict[tuple, int] = {}  # one unit's windows share its frames: generate each missing unit once
        for i, key in enumerate(keys):
            if key not in units:
                first.setdefault(key, i)
        if first:
            generated = self.model.generate_deltas([condition[i] for i in first.values()])
            units.update({key: generated.select(j) for j, key in enumerate(first)})
        deltas = LoRADeltas.cat([units[key] for key in keys])
        for key, value in units.items():  # most recent last; a batch may span more units than the cache holds
            self._cache[key] = value
            self._cache.move_to_end(key)
        while len(self._cache) > self.hparams.condition_cache_size:
            self._cache.popitem(last=False)
        return self.model.score(batch["frames"], deltas, return_features=self.keep_features)

    def _reset_cache(self) -> None:
        self._cache.clear()

    def on_test_epoch_start(self) -> None:
        self._reset_cache()
        super().on_test_epoch_start()

    def on_predict_epoch_start(self) -> None:
        self._reset_cache()
        super().on_predict_epoch_start()

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._dataloader_idx = dataloader_idx
        return super().test_step(batch, batch_idx, dataloader_idx)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        self._dataloader_idx = dataloader_idx
        return super().predict_step(batch, batch_idx, dataloader_idx)

    # --------------------------------------------------------------------------------------------------- training
    def _offenders(self, batch: dict, inputs: Sequence[int] | None = None) -> str:
        records = getattr(getattr(self.trainer, "datamodule", None), "train_records", None) or []
        indices = batch["video_index"].tolist()
        if inputs:
            indices = [indices[i] for i in inputs if i < len(indices)]
        names = [records[i].name if i < len(records) else str(i) for i in indices]
        return ", ".join(names)

    def _stop(self, what: str, batch: dict, inputs: Sequence[int] | None = None) -> None:
        raise TrainingError(f"{what} at global step {self.global_step} (inputs: {self._offenders(batch, inputs)}). "
                            "Training stopped before the optimiser step; the last checkpoint is intact. Lower "
                            "model.lr, check these videos, or resume with --ckpt_path last.",
                            inputs=list(inputs or []))

    def training_step(self, batch: dict, batch_idx: int) -> None:
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        try:
            tokens = self.model.condition_tokens(batch["frames"])  # frozen vision encoder, no grad
            deltas = self.model.generator(tokens)
            bad = deltas.nonfinite_inputs()
            if bad:
                self._stop("non-finite generated LoRA weights", batch, bad)
            # Rollouts come from the same adapted policy the loss differentiates (GRPO's pi_old == pi_theta at
            # the first iteration); the generator runs once with grad and the rollouts see its detached output.
            experience = self.engine.make_experience(batch, self.model.adaptation(deltas.detach()))
            for iteration in range(self.hparams.num_iterations):
                if iteration > 0:
                    deltas = self.model.generator(tokens)
                loss, stats = self.engine.loss(batch, experience, self.model.adaptation(deltas))
                optimizer.zero_grad(set_to_none=True)
                self.manual_backward(loss)
                self.clip_gradients(optimizer, gradient_clip_val=self.hparams.grad_clip,
                                    gradient_clip_algorithm="norm")
                if any(not torch.isfinite(p.grad).all() for p in self.model.parameters() if p.grad is not None):
                    self._stop("non-finite gradients", batch)
                optimizer.step()
                scheduler.step()
        except TrainingError as err:
            if "global step" in str(err):
                raise
            self._stop(str(err), batch, err.inputs)
        batch_size = len(batch["label"])
        for key, value in stats.items():
            if isinstance(value, (int, float)) and math.isfinite(float(value)):
                self.log(f"train/{key}", float(value), batch_size=batch_size, on_step=True, on_epoch=False)
        self.log("train/lr", scheduler.get_last_lr()[0], batch_size=batch_size, on_step=True, on_epoch=False)
