"""``BenchModule``: the LightningModule base every method (frozen, baselines, COPRA) derives from.

It owns everything that must be computed identically for all methods so that their numbers are comparable:
the dense test/predict loops, putting window scores back together per video, frame-level metrics per test set,
and video-level validation. A method writes only what differs: how a batch of windows is scored
(:meth:`BenchModule.score_windows`) and, if it trains, ``training_step`` / ``configure_optimizers``.
"""

from __future__ import annotations

import abc
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from copra_bench.errors import CopraError, EvaluationError
from copra_bench.evaluation.assembly import VideoScores, WindowScoreCollector
from copra_bench.evaluation.metrics import video_auc
from copra_bench.evaluation.postprocess import DEFAULT_PRESET
from copra_bench.evaluation.protocol import (
    EvaluationSettings,
    StepMetrics,
    TestSetEvaluation,
    evaluate_test_set,
)
from copra_bench.vlm import ScoreOutput, VLMBackbone

# Checkpoints leave the frozen backbone out on purpose and on_load_checkpoint refuses one that lacks a trained
# tensor, so Lightning's warning listing every frozen key on load says nothing useful.
warnings.filterwarnings("ignore", message="Found keys that are in the model state dict but not in the checkpoint")


@dataclass
class TestSetResult:
    """Everything a test pass produced for one test set: per-video scores and the metrics of every step."""

    name: str
    evaluation: TestSetEvaluation
    videos: list[VideoScores]
    stride: int

    @property
    def metrics(self) -> StepMetrics:
        """Step 1 (the method's own scores, no post-processing)."""
        return self.evaluation.steps["step1"]


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
        self.test_results: dict[str, TestSetResult] = {}
        self.test_errors: dict[str, str] = {}
        self.predict_results: dict[str, list[VideoScores]] = {}
        self._collectors: list[WindowScoreCollector] = []
        self._val_scores: list[tuple[float, int]] = []
        # Checkpoints hold only what the method trains; the frozen backbone is rebuilt from its path on load.
        self.strict_loading = False

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

    # --------------------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._val_scores = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.score_batch(batch)
        self._val_scores += list(zip(out.p_anomaly.float().cpu().tolist(), batch["label"].cpu().tolist()))

    def on_validation_epoch_end(self) -> None:
        scores = self._val_scores
        if self.trainer.world_size > 1:
            parts: list = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(parts, scores)
            scores = [s for part in parts for s in part]
        if scores:
            values, labels = zip(*scores)
            self.log("val/video_auc", video_auc(np.array(values), np.array(labels)), rank_zero_only=True)

    # --------------------------------------------------------------------------------------------- test and predict
    def _start_collecting(self) -> None:
        datamodule = self.trainer.datamodule
        self._collectors = [WindowScoreCollector(ts, keep_features=self.keep_features)
                            for ts in datamodule.test_sets]

    def _collect(self, batch: dict, dataloader_idx: int) -> ScoreOutput:
        out = self.score_batch(batch)
        features = out.features if self.keep_features else None
        self._collectors[dataloader_idx].add(batch["video_index"], batch["window_index"], out.p_anomaly, features)
        return out

    def on_test_epoch_start(self) -> None:
        self._start_collecting()

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        # Each test set is evaluated on its own: one that fails (missing windows, NaN scores) is recorded in
        # ``test_errors`` and the others are still kept; RunArtifacts saves them, then reports the failure.
        self.test_results, self.test_errors = {}, {}
        for collector in self._collectors:
            name = collector.test_set.name
            stride = collector.test_set.window_spec.stride
            try:
                collector.gather()
                videos = collector.assemble()
                evaluation = evaluate_test_set(name, videos, stride, self.evaluation_settings)
            except EvaluationError as err:
                self.test_errors[name] = str(err)
                continue
            self.test_results[name] = TestSetResult(name=name, evaluation=evaluation, videos=videos, stride=stride)
            # Every rank holds the same gathered numbers; sync_dist (a mean of equal values, exact) keeps Lightning
            # from warning about unsynchronised epoch-level metrics under DDP.
            for key, value in evaluation.mlflow_metrics().items():
                self.log(key, value, sync_dist=True)
        self._collectors = []

    def on_test_end(self) -> None:
        # Lightning calls callbacks' on_test_end first, so RunArtifacts has saved the sets that succeeded.
        if self.test_errors:
            raise EvaluationError("evaluation failed for "
                                  + "; ".join(f"{k}: {v}" for k, v in self.test_errors.items()))

    def on_predict_epoch_start(self) -> None:
        self._start_collecting()

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        out = self._collect(batch, dataloader_idx)
        return {"video_index": batch["video_index"], "window_index": batch["window_index"],
                "p_anomaly": out.p_anomaly.detach().cpu()}

    def on_predict_epoch_end(self) -> None:
        self.predict_results = {}
        for collector in self._collectors:
            collector.gather()
            self.predict_results[collector.test_set.name] = collector.assemble()
        self._collectors = []

    def metric_conventions(self) -> dict[str, str]:
        """How the logged metrics are defined (recorded with the run as ``conventions.*``)."""
        from copra_bench.evaluation.postprocess import dataset_family
        from copra_bench.evaluation.protocol import AP_PRIMARY, CLASS_AUC_CONVENTION

        # Test set names without loading the test split (this runs when the config is saved, before fit): the
        # DataModule's name, a cross-domain one split into its members (``A_to_B``).
        datamodule = getattr(getattr(self, "_trainer", None), "datamodule", None)
        names = str(getattr(datamodule, "name", "")).split("_to_") if datamodule is not None else []
        primaries = {name: AP_PRIMARY[dataset_family(name)] for name in names}
        ap = (next(iter(primaries.values())) if len(set(primaries.values())) == 1
              else ",".join(f"{k}={v}" for k, v in primaries.items()) or "per dataset")
        return {"metric_aggregation": "micro (all test frames concatenated)", "ap_convention": ap,
                "ap_variants": "ap_step = sklearn average_precision_score; ap_trapz = auc(recall, precision)",
                "class_auc": CLASS_AUC_CONVENTION, "postprocess": self.evaluation_settings.postprocess,
                "window_to_frames": "window i covers frames [i*stride, (i+1)*stride), last to the end"}
