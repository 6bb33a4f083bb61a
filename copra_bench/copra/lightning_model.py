"""COPRA as a method of the benchmark: the generator trained with GRPO, tested with the shared protocol.

Only what differs from the other methods lives here: how a batch is scored (a LoRA generated per input — per window,
per chunk or per video — injected into the frozen VLM) and the GRPO training step. Test/predict loops, frame
assembly, metrics and checkpoint filtering come from :class:`~copra_bench.bench_module.BenchModule`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

from copra_bench.copra.layout import LoRADeltas
from copra_bench.copra.torch_model import COPRAModel
from copra_bench.errors import CopraError
from copra_bench.rl.method import GRPOMethod
from copra_bench.vlm import ScoreOutput

Granularity = Literal["window", "chunk", "video"]


class COPRA(GRPOMethod):
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
        condition_cache_size: Generated LoRAs kept at test time for chunk/video granularity (per unit, LRU).
        generator_checkpointing: Recompute generator blocks in backward (saves memory on 7B-sized layouts).
        **kwargs: The GRPO settings of :class:`~copra_bench.rl.method.GRPOMethod` (``rollout_mode``,
            ``num_generations``, sampling, ``beta``, ``epsilon``, ``loss_type``, ``num_iterations``, ``rewards``), the
            optimiser settings of :class:`~copra_bench.trained_module.TrainedModule` (``lr``: paper 1e-6 on 8B
            backbones, linearly decayed; ``grad_clip``: paper 1.0; ``epochs``: the paper trains one) and the
            :class:`~copra_bench.bench_module.BenchModule` ones (backbone, dtype, ...).
    """

    method_name = "copra"

    def __init__(self, *, rank: int = 8, alpha: float = 16.0,
                 target_modules: Sequence[str] = ("q", "k", "v", "o", "gate", "up", "down"),
                 layers: Sequence[int] | None = None, generator_depth: int | None = None, generator_width: int = 512,
                 generator_heads: int = 8, segment_size: int = 512, global_latent: bool = True,
                 granularity: Granularity = "window", chunk_seconds: float = 120.0, condition_cache_size: int = 16,
                 generator_checkpointing: bool = False, lr: float = 1e-6, **kwargs: Any) -> None:
        if granularity not in ("window", "chunk", "video"):
            raise CopraError(f"model.granularity must be 'window', 'chunk' or 'video', got {granularity!r}")
        if granularity == "chunk" and not chunk_seconds > 0:
            raise CopraError(f"model.chunk_seconds must be > 0 for granularity 'chunk', got {chunk_seconds}")
        super().__init__(lr=lr, **kwargs)
        self.model = COPRAModel(self.backbone, rank=rank, alpha=alpha, target_modules=list(target_modules),
                                layers=None if layers is None else list(layers), depth=generator_depth,
                                width=generator_width, heads=generator_heads, segment_size=segment_size,
                                global_latent=global_latent, checkpointing=generator_checkpointing)
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._dataloader_idx = 0

    # ------------------------------------------------------------------------------------------------- settings
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "set_conditioning"):
            datamodule.set_conditioning(self.hparams.granularity, chunk_seconds=self.hparams.chunk_seconds)
        elif self.hparams.granularity != "window":
            raise CopraError(f"granularity {self.hparams.granularity!r} needs a DataModule with set_conditioning()")

    def parameter_counts(self) -> dict[str, int]:
        return {**super().parameter_counts(), "generator_params": self.model.generator_parameters(),
                "generated_lora_values": self.model.generated_values()}

    def trainable_parameters(self) -> list:
        return [p for p in self.model.parameters() if p.requires_grad]

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
    def grpo_adaptations(self, batch: dict):
        tokens = self.model.condition_tokens(batch["frames"])  # frozen vision encoder, no grad
        deltas = self.model.generator(tokens)
        bad = deltas.nonfinite_inputs()
        if bad:
            self.stop("non-finite generated LoRA weights", batch, bad)
        # The generator runs once with grad; the rollouts see its detached output. Later iterations regenerate
        # from the updated generator.
        return self.model.adaptation(deltas.detach()), (
            lambda iteration: self.model.adaptation(deltas if iteration == 0 else self.model.generator(tokens)))
