"""The evaluator a :class:`~copra_bench.bench_module.BenchModule` owns (built by its ``configure_evaluator``).

It is the one place test, predict and validation numbers are made: it collects window scores per test set
(:class:`~copra_bench.evaluation.assembly.WindowScoreCollector`), assembles frames, runs the protocol of each set
(:func:`~copra_bench.evaluation.protocol.evaluate_test_set`) and returns the results and the per-set errors as a
:class:`TestOutcome`. :meth:`Evaluator.publish_test` hands that value to the run's :class:`ResultSink` callbacks
(they save what succeeded) and then raises for the failed sets, in that order, in one function.

Under DDP a test pass's windows are gathered to rank 0 only, which assembles, evaluates (bootstrap included) and
writes; it then broadcasts what every rank must agree on (:attr:`TestOutcome.metrics`, the logged values, and the
errors), so ``trainer.callback_metrics`` and the exception raised for a failed set are the same on every rank, and
no rank but 0 spends the evaluation's time or memory. Validation clips are few: their AUC is all-gathered
(torchmetrics) and computed on every rank.
"""

from __future__ import annotations

import abc
import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from copra_bench.errors import EvaluationError
from copra_bench.evaluation.assembly import (
    VideoScores,
    WindowScoreCollector,
    assemble_windows,
)
from copra_bench.evaluation.metrics import video_auc
from copra_bench.evaluation.protocol import (
    CLASS_AUC_CONVENTION,
    EvaluationSettings,
    StepMetrics,
    TestSetEvaluation,
    evaluate_test_set,
    protocol_params,
)
from copra_bench.evaluation.ranks import broadcast_from_zero, gather_to_zero, rank
from copra_bench.evaluation.recipes import resolve_protocol


@dataclass
class TestSetResult:
    """Everything a test pass produced for one test set: per-video scores and the metrics of every step.

    ``family`` is the test set's own dataset family (recorded in its scores file); ``evaluation.family`` is the one
    whose parameters were used (another when the preset forces it). ``skipped``: the videos left out because they
    failed while decoding (``on_bad_video: skip``), one line each for ``skipped_videos.txt``."""

    name: str
    evaluation: TestSetEvaluation
    videos: list[VideoScores]
    stride: int
    family: str
    skipped: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> StepMetrics:
        """Step 1 (the method's own scores, no post-processing)."""
        return self.evaluation.steps["step1"]


@dataclass
class TestOutcome:
    """The result of one test pass: the sets that were evaluated, the errors of those that failed, and what the
    run records with them (``protocol.*`` params, ``conventions``). Under DDP ``results``, ``protocol`` and
    ``conventions`` are on rank 0 only; ``metrics`` (every set's logged values, flat) and ``errors`` on every rank."""

    results: dict[str, TestSetResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    conventions: dict[str, str] = field(default_factory=dict)

    def raise_for_errors(self) -> None:
        if self.errors:
            raise EvaluationError("evaluation failed for " + "; ".join(f"{k}: {v}" for k, v in self.errors.items()))


class ResultSink(abc.ABC):
    """A callback that saves what the evaluator produced (the run's artifacts); called on every rank."""

    @abc.abstractmethod
    def save_test_outcome(self, trainer: L.Trainer, outcome: TestOutcome) -> None:
        """Save the test sets that succeeded (the evaluator raises for the others afterwards)."""

    @abc.abstractmethod
    def save_predictions(self, trainer: L.Trainer, predictions: dict[str, list[VideoScores]]) -> None:
        """Save the per-video scores of a predict pass."""


class VideoAUCMetric(Metric):
    """Video-level ROC-AUC of validation clips (``val/video_auc``), gathered over DDP ranks by torchmetrics."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__(compute_with_cache=False)
        self.spread: tuple[int, float, float] | None = None
        for key, dtype in (("scores", torch.float32), ("labels", torch.int64)):
            self.add_state(key, default=[], dist_reduce_fx="cat")
            getattr(self, key).append(torch.zeros(0, dtype=dtype))  # typed, for ranks that see no clip

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        self.scores.append(scores.detach().reshape(-1).to(self.device, torch.float32))
        self.labels.append(labels.detach().reshape(-1).to(self.device, torch.int64))

    def compute(self) -> float | None:
        """The AUC (None when no clip was scored); :attr:`spread` is then ``(clips, min score, max score)``."""
        scores = dim_zero_cat(self.scores).cpu().numpy().astype(np.float64)  # a list, or one tensor once synced
        self.spread = (int(scores.size), float(scores.min()), float(scores.max())) if scores.size else None
        if scores.size == 0:
            return None
        return video_auc(scores, dim_zero_cat(self.labels).cpu().numpy())


def _state_device(device: torch.device) -> torch.device:
    """Where the validation metric's states live: the module's device only when NCCL gathers them (it gathers CUDA
    tensors only); else the CPU. (Test collectors are always on the CPU: rank 0 gathers them as objects.)"""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return device if distributed and torch.distributed.get_backend() == "nccl" else torch.device("cpu")


def decode_failures(datamodule: Any) -> dict[str, dict[int, str]] | None:
    """The test videos the DataModule's loaders skipped while decoding (``{test set: {video index: problem}}``),
    over every DDP rank, on rank 0 (None on the others; every rank must call this under DDP)."""
    parts = gather_to_zero(getattr(datamodule, "decode_failures", dict)())
    if parts is None:
        return None
    failures: dict[str, dict[int, str]] = {}
    for part in parts:
        for name, videos in (part or {}).items():
            failures.setdefault(name, {}).update(videos)
    return failures


def assemble_without(test_set: Any, data: dict[str, Any], skipped: dict[int, str]) -> list[VideoScores]:
    """The videos of ``test_set`` from its windows ``data`` (:meth:`WindowScoreCollector.gathered`), leaving out
    those in ``skipped`` (video index -> problem) and whatever windows of them were scored before their decoding
    failed."""
    if not skipped:
        return assemble_windows(test_set, **data)
    kept = [i for i in range(len(test_set.records)) if i not in skipped]
    new_index = np.full(len(test_set.records), -1, dtype=np.int64)
    new_index[kept] = np.arange(len(kept))
    rows = new_index[data["video_index"]] >= 0
    subset = dataclasses.replace(test_set, records=[test_set.records[i] for i in kept])
    return assemble_windows(subset, video_index=new_index[data["video_index"][rows]],
                            window_index=data["window_index"][rows], scores=data["scores"][rows],
                            features=None if data["features"] is None else data["features"][rows])


def _sinks(trainer: L.Trainer) -> list[ResultSink]:
    return [callback for callback in trainer.callbacks if isinstance(callback, ResultSink)]


class Evaluator:
    """Collects, evaluates and publishes the scores of one module (see the module docstring).

    Args:
        settings: The choices that change the numbers (post-processing preset, bootstrap).
        keep_features: Keep each test window's pooled vision feature (Steps 2-3 and the scores file need them).
    """

    def __init__(self, settings: EvaluationSettings, *, keep_features: bool = True) -> None:
        self.settings = settings
        self.keep_features = keep_features
        self.outcome = TestOutcome()
        self.predictions: dict[str, list[VideoScores]] = {}
        self._collectors: list[WindowScoreCollector] = []
        self._validation = VideoAUCMetric()

    # ------------------------------------------------------------------------------------------------ validation
    def start_validation(self, device: torch.device) -> None:
        self._validation = VideoAUCMetric().to(_state_device(device))

    def add_validation(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        self._validation.update(scores, labels)

    def validation_auc(self) -> float | None:
        """The epoch's video AUC over every rank's clips (every rank must call it under DDP)."""
        return self._validation.compute()

    def validation_spread(self) -> tuple[int, float, float] | None:
        """``(clips, min score, max score)`` of the epoch's validation pass over every rank (None when no clip was
        scored): equal min and max is a collapsed method. Call after :meth:`validation_auc`."""
        return self._validation.spread

    # ------------------------------------------------------------------------------------------ test and predict
    def start(self, test_sets: list, device: torch.device) -> None:
        """One collector per test set, in test-dataloader order (kept on the CPU whatever the module's ``device``)."""
        # on the CPU always: they are gathered as objects (any backend), and a long pass keeps no scores or features
        # in accelerator memory
        self._collectors = [WindowScoreCollector(ts, keep_features=self.keep_features) for ts in test_sets]

    def add(self, dataloader_idx: int, video_index: torch.Tensor, window_index: torch.Tensor,
            scores: torch.Tensor, features: torch.Tensor | None = None) -> None:
        self._collectors[dataloader_idx].add(video_index, window_index, scores,
                                             features if self.keep_features else None)

    def evaluate(self, datamodule: Any = None) -> TestOutcome:
        """Evaluate every test set on its own: one that fails (missing windows, NaN scores) is recorded in
        ``errors`` and the others are still evaluated. Kept as :attr:`outcome` until the next pass. Under DDP every
        rank must call it: rank 0 evaluates, the others receive its ``metrics`` and ``errors``."""
        failures = decode_failures(datamodule)
        windows = [collector.gathered() for collector in self._collectors]
        outcome, crash = TestOutcome(), None
        if rank() == 0:
            try:
                outcome = self._evaluate_gathered(windows, failures or {}, datamodule)
            except Exception as err:  # noqa: BLE001  (told to the other ranks, then raised: else they wait forever)
                crash = err
        shared = broadcast_from_zero({"metrics": outcome.metrics, "errors": outcome.errors,
                                      "crash": None if crash is None else f"{type(crash).__name__}: {crash}"})
        self._collectors = []
        if crash is not None:
            raise crash
        if shared["crash"] is not None:
            raise EvaluationError(f"the evaluation on rank 0 failed: {shared['crash']}")
        outcome.metrics, outcome.errors = shared["metrics"], shared["errors"]
        self.outcome = outcome
        return outcome

    def _evaluate_gathered(self, windows: list[dict[str, Any] | None], failures: dict[str, dict[int, str]],
                           datamodule: Any) -> TestOutcome:
        outcome = TestOutcome()
        for collector, data in zip(self._collectors, windows, strict=True):
            test_set = collector.test_set
            stride = test_set.window_spec.stride
            skipped = failures.get(test_set.name, {})
            if skipped:
                warnings.warn(f"{test_set.name}: {len(skipped)} of {len(test_set.records)} videos were skipped "
                              f"while decoding (on_bad_video: skip) and are left out of its metrics, e.g. "
                              f"{next(iter(skipped.values()))}", stacklevel=2)
            try:
                videos = assemble_without(test_set, data, skipped)
                evaluation = evaluate_test_set(test_set.name, videos, stride, self.settings, family=test_set.family)
            except EvaluationError as err:
                outcome.errors[test_set.name] = str(err)
                continue
            if skipped:  # said next to the numbers (the table, metrics.json): they are over fewer videos
                for step in evaluation.steps.values():
                    step.notes.append(f"{len(skipped)} videos skipped while decoding (on_bad_video: skip), listed "
                                      "in skipped_videos.txt")
            outcome.results[test_set.name] = TestSetResult(test_set.name, evaluation, videos, stride,
                                                           test_set.family, [skipped[i] for i in sorted(skipped)])
            outcome.metrics.update(evaluation.mlflow_metrics())
        outcome.protocol = protocol_params([r.evaluation for r in outcome.results.values()], self.settings,
                                           datamodule)
        families = datamodule.test_set_families() if datamodule is not None else {}
        outcome.conventions = self.conventions(families)
        return outcome

    def assemble(self, datamodule: Any = None) -> dict[str, list[VideoScores]]:
        """Per-video scores of every test set of a predict pass (raises on missing or duplicated windows), without
        the videos the DataModule's loaders skipped while decoding; on rank 0 under DDP (empty on the others, which
        save nothing), where every rank must call it."""
        failures = decode_failures(datamodule)
        windows = [collector.gathered() for collector in self._collectors]
        self.predictions = {} if failures is None else {
            c.test_set.name: assemble_without(c.test_set, data, failures.get(c.test_set.name, {}))
            for c, data in zip(self._collectors, windows, strict=True)}
        self._collectors = []
        return self.predictions

    def publish_test(self, trainer: L.Trainer) -> None:
        """Save the last outcome through the run's sinks, then raise for the test sets that failed."""
        for sink in _sinks(trainer):
            sink.save_test_outcome(trainer, self.outcome)
        self.outcome.raise_for_errors()

    def publish_predictions(self, trainer: L.Trainer) -> None:
        for sink in _sinks(trainer):
            sink.save_predictions(trainer, self.predictions)

    # ------------------------------------------------------------------------------------------------ conventions
    def conventions(self, families: dict[str, str]) -> dict[str, str]:
        """How the logged metrics are defined (``conventions.*``), for test sets ``{name: dataset family}``."""
        # The preset decides the primary AP (vadclip / rtfm / lavad use their method's own), not the dataset alone.
        primaries = {name: resolve_protocol(self.settings.postprocess, family).ap_primary
                     for name, family in families.items()}
        ap = (next(iter(primaries.values())) if len(set(primaries.values())) == 1
              else ",".join(f"{k}={v}" for k, v in primaries.items()) or "per dataset")
        return {"metric_aggregation": "micro (all test frames concatenated)", "ap_convention": ap,
                "ap_variants": "ap_step = sklearn average_precision_score; ap_trapz = auc(recall, precision)",
                "class_auc": CLASS_AUC_CONVENTION, "postprocess": self.settings.postprocess,
                "window_to_frames": "window i covers frames [i*stride, (i+1)*stride), last to the end"}
