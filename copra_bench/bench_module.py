"""``BenchModule``: the LightningModule base every method (frozen, baselines, COPRA) derives from.

It owns everything that must be computed identically for all methods so that their numbers are comparable:
the dense test/predict loops and, through its :class:`~copra_bench.evaluation.evaluator.Evaluator`
(:meth:`BenchModule.configure_evaluator`), putting window scores back together per video, frame-level metrics per
test set, video-level validation, and handing the results to the run's artifacts. A method writes only what differs: how a batch of windows is scored
(:meth:`BenchModule.score_windows`) and, if it trains, ``training_step`` / ``configure_optimizers``.
"""

from __future__ import annotations

import abc
import json
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch

from copra_bench.errors import CopraError
from copra_bench.evaluation.assembly import VideoScores
from copra_bench.evaluation.evaluator import Evaluator, TestSetResult
from copra_bench.evaluation.postprocess import DEFAULT_PRESET
from copra_bench.evaluation.protocol import EvaluationSettings
from copra_bench.vlm import ScoreOutput, VLMBackbone

__all__ = ["BenchModule", "TestSetResult"]

# Checkpoints leave the frozen backbone out on purpose and on_load_checkpoint refuses one that lacks a trained
# tensor, so Lightning's warning listing every frozen key on load says nothing useful.
warnings.filterwarnings("ignore", message="Found keys that are in the model state dict but not in the checkpoint")
#: The epoch-level metrics a module logs are the same on every rank already (test: evaluated on rank 0 and broadcast;
#: validation: computed over every rank's clips), so Lightning's advice to reduce them with sync_dist does not apply.
_BROADCAST_LOG = r"It is recommended to use `self.log\('(test|val)/.*sync_dist=True"
warnings.filterwarnings("ignore", message=_BROADCAST_LOG)


#: Batch entries only the VLM's processor reads (uint8 frames): they stay on the CPU (see transfer_batch_to_device).
HOST_KEYS = ("frames", "condition_frames")
#: ``backbone_options`` keys that set the processor's frame / pixel budget (recorded as a protocol parameter).
VISION_BUDGET_KEYS = ("video_kwargs", "images_kwargs", "min_pixels", "max_pixels", "size", "max_num_frames")


class BenchModule(L.LightningModule, abc.ABC):
    """Base of all methods: a frozen VLM backbone plus whatever the method adapts.

    Args:
        backbone: ``tiny-qwen2-vl`` (built in, random weights) or a local checkpoint directory
            (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, InternVL; never downloaded).
        backbone_dtype: ``float32``, ``bfloat16`` or ``float16``.
        backbone_seed: Seed of the built-in tiny backbones' random weights.
        frames_per_window: K frames per input (linked from the DataModule by the CLI).
        clip_fps: Frame rate of the K sampled frames (K / window seconds; linked from the DataModule). Qwen2.5-VL and
            Qwen3-VL use it for temporal positions.
        keep_features: Keep each test window's pooled vision feature (for retrieval refinement) in the scores file.
        backbone_options: Extra backbone settings: ``system_prompt``, ``user_prompt``, ``answer_prefix``,
            ``video_kwargs`` (e.g. ``{"size": {"shortest_edge": 200704, "longest_edge": 200704}}`` to fix a real
            Qwen2-VL's pixel budget), ``attn_implementation``.
        postprocess: Post-processing preset of Steps 2-3 (``vera_code``, ``vera_paper``; ``<preset>:<dataset>``
            forces a dataset's parameters), see :mod:`copra_bench.evaluation.postprocess`.
        bootstrap_samples: Bootstrap replicates of the 95% intervals of AUC and AP (0: none).
        bootstrap_seed: Seed of the bootstrap draws.
    """

    #: Short method name used in run names and reports.
    method_name: str = "base"

    def __init__(self, *, backbone: str = "tiny-qwen2-vl", backbone_dtype: str = "float32", backbone_seed: int = 0,
                 frames_per_window: int = 8, clip_fps: float = 0.8, keep_features: bool = True,
                 backbone_options: dict[str, Any] | None = None, postprocess: str = DEFAULT_PRESET,
                 bootstrap_samples: int = 1000, bootstrap_seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = VLMBackbone.load(backbone, dtype=backbone_dtype, seed=backbone_seed, video_fps=clip_fps,
                                         **(backbone_options or {}))
        self.frames_per_window = frames_per_window
        self.keep_features = keep_features
        self.evaluation_settings = EvaluationSettings(postprocess=postprocess, bootstrap_samples=bootstrap_samples,
                                                      bootstrap_seed=bootstrap_seed)
        self.evaluator = self.configure_evaluator()
        # Checkpoints hold only what the method trains; the frozen backbone is rebuilt from its path on load.
        self.strict_loading = False

    # ------------------------------------------------------------------------------------------ host-side input
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move a batch to the model's device except its frames (:data:`HOST_KEYS`): only the processor reads them,
        on the CPU, so moving them would cost a GPU -> CPU round trip of every batch's uint8 video."""
        if not isinstance(batch, dict) or not any(key in batch for key in HOST_KEYS):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        moved = super().transfer_batch_to_device({k: v for k, v in batch.items() if k not in HOST_KEYS}, device,
                                                 dataloader_idx)
        return {key: batch[key] if key in HOST_KEYS else moved[key] for key in batch}

    # ---------------------------------------------------------------------------------------------- checkpoints
    def frozen_state_keys(self) -> set[str]:
        """State-dict keys of the frozen backbone (under any module that holds it). Trainable tensors a method
        injects into the backbone (a peft LoRA) are not frozen: they are checkpointed."""
        frozen = {id(t) for t in self.backbone.state_dict(keep_vars=True).values()
                  if not (isinstance(t, torch.nn.Parameter) and t.requires_grad)}
        return {k for k, t in self.state_dict(keep_vars=True).items() if id(t) in frozen}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        frozen = self.frozen_state_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}
        checkpoint["frozen_backbone"] = self.hparams.backbone

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # strict_loading is off only for the frozen keys: anything else missing is a wrong checkpoint.
        expected = set(self.state_dict()) - self.frozen_state_keys()
        missing = sorted(expected - set(checkpoint["state_dict"]))
        if missing:
            raise CopraError(f"checkpoint lacks {len(missing)} trained tensors of {type(self).__name__}, e.g. "
                             f"{', '.join(missing[:5])}: it was saved by another method or configuration")

    # -------------------------------------------------------------------------------------------- what methods write
    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """Trainer settings this method needs by default (the config may still override them)."""
        return {}

    @abc.abstractmethod
    def score_windows(self, frames: torch.Tensor) -> ScoreOutput:
        """Anomaly scores of a batch of inputs: ``frames[B, K, H, W, 3]`` uint8 RGB, or a list of ``[K, H, W, 3]``
        when the batch mixes resolutions."""

    def score_batch(self, batch: dict) -> ScoreOutput:
        """Scores of a test/predict/validation batch. The default scores ``batch["frames"]``; a method that needs
        more of the batch (e.g. COPRA's per-chunk conditioning frames) overrides this instead of ``score_windows``."""
        return self.score_windows(batch["frames"])

    def export_trained(self, directory: Path) -> Path | None:
        """Write what the method learned in a form usable outside this project (e.g. a peft adapter) under
        ``directory``; called on rank 0 when fit ends, and logged as the run's ``trained/`` artifacts. Default:
        nothing (the checkpoint holds it)."""
        return None

    # --------------------------------------------------------------------------------------------- counts for logs
    def parameter_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"params_total": total, "params_trainable": trainable}

    # --------------------------------------------------------------------------------------------------- evaluation
    def configure_evaluator(self) -> Evaluator:
        """The evaluator of this module's test, predict and validation passes (from its ``EvaluationSettings``)."""
        return Evaluator(self.evaluation_settings, keep_features=self.keep_features)

    @property
    def test_results(self) -> dict[str, TestSetResult]:
        """The last test pass's evaluated test sets (read-only view of the evaluator's outcome)."""
        return self.evaluator.outcome.results

    @property
    def test_errors(self) -> dict[str, str]:
        """The last test pass's failed test sets and why."""
        return self.evaluator.outcome.errors

    @property
    def predict_results(self) -> dict[str, list[VideoScores]]:
        """The last predict pass's per-video scores per test set."""
        return self.evaluator.predictions

    # --------------------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self.evaluator.start_validation(self.device)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.score_batch(batch)
        self.evaluator.add_validation(out.p_anomaly, batch["label"])

    def on_validation_epoch_end(self) -> None:
        auc = self.evaluator.validation_auc()
        if auc is not None:
            self.log("val/video_auc", auc, sync_dist=False)  # every rank computed it over every rank's clips

    # --------------------------------------------------------------------------------------------- test and predict
    def _collect(self, batch: dict, dataloader_idx: int) -> ScoreOutput:
        out = self.score_batch(batch)
        self.evaluator.add(dataloader_idx, batch["video_index"], batch["window_index"], out.p_anomaly, out.features)
        return out

    def on_test_epoch_start(self) -> None:
        self.evaluator.start(self.trainer.datamodule.test_sets, self.device)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        outcome = self.evaluator.evaluate(self.trainer.datamodule)
        outcome.protocol.update(self.input_protocol())
        # Rank 0 evaluated and broadcast the values: every rank logs the very same numbers, unreduced (a sync_dist
        # mean of N equal float32 values is not always the value; see _BROADCAST_LOG for the warning).
        for key, value in outcome.metrics.items():
            self.log(key, value, sync_dist=False)

    def on_test_end(self) -> None:
        # After the epoch's metrics reached the loggers: save what succeeded, then raise for the failed sets.
        self.evaluator.publish_test(self.trainer)

    def on_predict_epoch_start(self) -> None:
        self.evaluator.start(self.trainer.datamodule.test_sets, self.device)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        out = self._collect(batch, dataloader_idx)
        return {"video_index": batch["video_index"], "window_index": batch["window_index"],
                "p_anomaly": out.p_anomaly.detach().cpu()}

    def on_predict_epoch_end(self) -> None:
        self.evaluator.assemble(self.trainer.datamodule)

    def on_predict_end(self) -> None:
        self.evaluator.publish_predictions(self.trainer)

    def input_protocol(self) -> dict[str, str]:
        """The vision input budget (``protocol.vision_budget``): the processor's frame / pixel budget from
        ``backbone_options`` (e.g. the shipped Qwen2-VL 7B configs' 100,352-150,528 px per frame), or ``processor
        default``. It changes the numbers (XD-Violence at native 1280x720 has 4x the vision tokens), so runs that
        differ in it are never averaged together."""
        options = self.hparams.get("backbone_options") or {}
        budget = {key: value for key, value in options.items() if key in VISION_BUDGET_KEYS}
        return {"vision_budget": json.dumps(budget, sort_keys=True, default=str) if budget else "processor default"}

    def metric_conventions(self) -> dict[str, str]:
        """How the logged metrics are defined (recorded with the run as ``conventions.*``). The DataModule names
        its test sets' dataset families without loading the test split (this runs when the config is saved)."""
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        return self.evaluator.conventions(datamodule.test_set_families() if datamodule is not None else {})
