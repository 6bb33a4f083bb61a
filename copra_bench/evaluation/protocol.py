"""The evaluation protocol of one test set: the three post-processing steps, and every metric of each step.

Metrics of a step (names as logged, ``test/<set>/<step>/<metric>``):

* ``auc``: micro frame ROC-AUC (all frames of all test videos concatenated).
* ``ap_step`` / ``ap_trapz``: the two AP variants; ``ap`` is the dataset's primary one (:data:`AP_PRIMARY`).
* ``macro_auc``: mean of per-video AUCs; videos with one class only (every normal video) are skipped and counted.
* ``auc_a`` / ``ap_a``: micro AUC / primary AP on the abnormal videos only.
* ``far``: false-alarm rate, share of frames of normal videos scored ``>= 0.5``.
* ``auc_class/<C>``: micro AUC on the videos of class C plus all normal videos (the videos of the other anomaly
  classes left out); XD-Violence videos with several codes count for each of them.
* ``auc_ci_low/high``, ``ap_ci_low/high``: 95% bootstrap intervals of ``auc`` and ``ap`` (resampled test videos).

An undefined metric is NaN here, ``null`` with its reason in ``metrics.json``, and not logged to MLflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from copra_bench.errors import EvaluationError
from copra_bench.evaluation.assembly import VideoScores, check_ground_truth
from copra_bench.evaluation.bootstrap import bootstrap_intervals
from copra_bench.evaluation.metrics import (
    UNDEFINED,
    SortedFrames,
    curve_metrics,
    false_alarm_rate,
    per_video_auc,
)
from copra_bench.evaluation.postprocess import (
    DEFAULT_PRESET,
    STEPS,
    PostprocessParams,
    resolve_preset,
    three_steps,
)

#: The AP variant reported as ``ap``: trapezoid where the field's papers use it (XD-Violence), else sklearn's.
AP_PRIMARY = {"ucf_crime": "step", "xd_violence": "trapz", "shanghaitech": "step", "synthetic": "step",
              "generic": "step"}
METRICS = ("auc", "ap", "ap_step", "ap_trapz", "macro_auc", "auc_a", "ap_a", "far",
           "auc_ci_low", "auc_ci_high", "ap_ci_low", "ap_ci_high")
NORMAL_CLASSES = frozenset({"Normal", "normal", "A", "0", ""})
CLASS_AUC_CONVENTION = "videos of the class + all normal videos"
FAR_RULE = "score >= {threshold} on frames of normal videos"


@dataclass(frozen=True)
class EvaluationSettings:
    """Choices that change the numbers (all recorded as ``protocol.*`` params)."""

    postprocess: str = DEFAULT_PRESET
    bootstrap_samples: int = 1000
    bootstrap_seed: int = 0
    far_threshold: float = 0.5

    def protocol_params(self) -> dict[str, str | int | float]:
        return {"postprocess": self.postprocess, "metric_aggregation": "micro",
                "bootstrap_samples": self.bootstrap_samples, "bootstrap_seed": self.bootstrap_seed,
                "bootstrap_unit": "test video", "far_rule": FAR_RULE.format(threshold=self.far_threshold),
                "class_auc": CLASS_AUC_CONVENTION}


@dataclass
class StepMetrics:
    """All metrics of one post-processing step of one test set."""

    values: dict[str, float]
    auc_class: dict[str, float]
    undefined: dict[str, str]
    num_videos: int
    num_frames: int
    num_anomalous_frames: int
    notes: list[str] = field(default_factory=list)

    # the foundation's names (tests and callers read result.metrics.auc / .ap)
    @property
    def auc(self) -> float:
        return self.values["auc"]

    @property
    def ap(self) -> float:
        return self.values["ap"]

    def logged(self) -> dict[str, float]:
        """Defined metrics, flat: ``auc``..., ``auc_class/<C>``."""
        out = {k: v for k, v in self.values.items() if math.isfinite(v)}
        out.update({f"auc_class/{c}": v for c, v in self.auc_class.items() if math.isfinite(v)})
        return out

    def as_json(self) -> dict:
        clean = lambda v: v if math.isfinite(v) else None
        return {**{k: clean(v) for k, v in self.values.items()},
                "auc_class": {c: clean(v) for c, v in self.auc_class.items()},
                "undefined": dict(self.undefined), "num_videos": self.num_videos, "num_frames": self.num_frames,
                "num_anomalous_frames": self.num_anomalous_frames, "notes": list(self.notes)}


@dataclass
class TestSetEvaluation:
    """Every step of one test set, with the settings that produced it."""

    name: str
    family: str
    ap_primary: str
    params: PostprocessParams
    settings: EvaluationSettings
    steps: dict[str, StepMetrics]
    frame_scores: dict[str, list[np.ndarray] | None]

    def mlflow_metrics(self) -> dict[str, float]:
        return {f"test/{self.name}/{step}/{k}": v for step, m in self.steps.items() for k, v in m.logged().items()}

    def as_json(self) -> dict:
        return {"dataset": self.family, "ap_primary": self.ap_primary, "postprocess": self.settings.postprocess,
                "postprocess_params": self.params.as_dict(),
                **{step: m.as_json() for step, m in self.steps.items()}}


def check_videos(name: str, videos: list[VideoScores]) -> None:
    """Ground truth present and as long as the scores, scores finite: else one error naming the videos."""
    if not videos:
        raise EvaluationError(f"{name}: no test videos")
    check_ground_truth(videos, where=name)
    bad = [v.name for v in videos if not (np.isfinite(v.window_scores).all() and np.isfinite(v.frame_scores).all())]
    if bad:
        raise EvaluationError(f"{name}: NaN or inf scores in {len(bad)} videos: {', '.join(bad[:10])}")


def _classes_of(videos: list[VideoScores]) -> list[str]:
    found = {c for v in videos if v.label == 1 for c in v.classes if c not in NORMAL_CLASSES}
    return sorted(found)


def step_metrics(frame_scores: list[np.ndarray], videos: list[VideoScores], *, ap_primary: str,
                 settings: EvaluationSettings, sigmoid_scores: bool = False) -> StepMetrics:
    """All metrics of one step from per-video frame scores."""
    lengths = np.array([s.shape[0] for s in frame_scores])
    video_index = np.repeat(np.arange(len(videos)), lengths)
    frames = SortedFrames.build(np.concatenate(frame_scores), np.concatenate([v.gt for v in videos]), video_index)
    labels = np.array([v.label for v in videos])
    values: dict[str, float] = dict.fromkeys(METRICS, UNDEFINED)
    undefined: dict[str, str] = {}
    notes: list[str] = []

    micro = curve_metrics(frames)
    values.update(auc=micro.auc, ap_step=micro.ap_step, ap_trapz=micro.ap_trapz)
    values["ap"] = micro.ap_step if ap_primary == "step" else micro.ap_trapz
    if micro.reason:
        for key in ("auc", "ap", "ap_step", "ap_trapz", "auc_ci_low", "auc_ci_high", "ap_ci_low", "ap_ci_high"):
            undefined[key] = micro.reason

    per_video = per_video_auc(frames, len(videos))
    usable = np.isfinite(per_video)
    if usable.any():
        values["macro_auc"] = float(per_video[usable].mean())
        notes.append(f"macro_auc over {int(usable.sum())} of {len(videos)} videos "
                     f"({int((~usable).sum())} with one class only skipped)")
    else:
        undefined["macro_auc"] = f"no video has both normal and anomalous frames ({len(videos)} videos)"

    abnormal = frames.of_videos(np.flatnonzero(labels == 1))
    on_abnormal = curve_metrics(abnormal)
    values["auc_a"] = on_abnormal.auc
    values["ap_a"] = on_abnormal.ap_step if ap_primary == "step" else on_abnormal.ap_trapz
    if on_abnormal.reason:
        undefined["auc_a"] = undefined["ap_a"] = f"abnormal videos only: {on_abnormal.reason}"

    normal_videos = np.flatnonzero(labels == 0)
    if sigmoid_scores:
        undefined["far"] = "scores passed through a sigmoid (VERA XD code): every frame scores >= 0.5"
    elif normal_videos.size == 0:
        undefined["far"] = "no normal test videos"
    else:
        values["far"] = false_alarm_rate(frames.of_videos(normal_videos), settings.far_threshold)

    auc_class: dict[str, float] = {}
    for cls in _classes_of(videos):
        members = [i for i, v in enumerate(videos) if cls in v.classes or v.label == 0]
        result = curve_metrics(frames.of_videos(np.array(members)))
        auc_class[cls] = result.auc
        if result.reason:
            undefined[f"auc_class/{cls}"] = result.reason
    if not auc_class:
        undefined["auc_class"] = "no anomaly classes recorded for the abnormal test videos"

    if not micro.reason and settings.bootstrap_samples > 0:
        ci = bootstrap_intervals(frames, len(videos), samples=settings.bootstrap_samples,
                                 seed=settings.bootstrap_seed, ap_variant=ap_primary)
        values.update(auc_ci_low=ci.auc[0], auc_ci_high=ci.auc[1], ap_ci_low=ci.ap[0], ap_ci_high=ci.ap[1])
        if ci.undefined_samples:
            notes.append(f"bootstrap: {ci.undefined_samples} of {ci.samples} replicates drew one class only "
                         "and were left out")
    elif not micro.reason:
        for key in ("auc_ci_low", "auc_ci_high", "ap_ci_low", "ap_ci_high"):
            undefined[key] = "bootstrap_samples = 0"
    if micro.reason:
        notes.append(f"AUC and AP undefined: {micro.reason}")
    return StepMetrics(values, auc_class, undefined, len(videos), int(frames.labels.size),
                       int(frames.labels.sum()), notes)


def evaluate_test_set(name: str, videos: list[VideoScores], stride: int,
                      settings: EvaluationSettings = EvaluationSettings(), *, family: str) -> TestSetEvaluation:
    """Post-process every video (three steps) and compute every metric of every step. ``family`` is the test set's
    dataset family (it picks the post-processing parameters and the primary AP unless the preset forces one)."""
    check_videos(name, videos)
    family, params = resolve_preset(settings.postprocess, family)
    ap_primary = AP_PRIMARY[family]
    per_step: dict[str, list[np.ndarray] | None] = {step: [] for step in STEPS}
    for v in videos:
        try:
            steps = three_steps(v.window_scores, v.features, v.frame_scores.shape[0], stride, params, video=v.name)
        except EvaluationError as err:
            raise EvaluationError(f"{name}/{v.name}: {err}") from None
        for step, scores in steps.items():
            if scores is None:
                per_step[step] = None
            elif per_step[step] is not None:
                per_step[step].append(scores)
    results: dict[str, StepMetrics] = {}
    for step in STEPS:
        scores = per_step[step]
        if scores is None:
            reason = "no per-window features saved (keep_features=false): Step 2 and 3 need them"
            results[step] = StepMetrics(dict.fromkeys(METRICS, UNDEFINED), {}, dict.fromkeys(METRICS, reason),
                                        len(videos), int(sum(v.gt.size for v in videos)),
                                        int(sum(int(v.gt.sum()) for v in videos)), [reason])
            continue
        results[step] = step_metrics(scores, videos, ap_primary=ap_primary, settings=settings,
                                     sigmoid_scores=step == "step3" and params.sigmoid)
    return TestSetEvaluation(name, family, ap_primary, params, settings, results, per_step)


def protocol_params(evaluations: list[TestSetEvaluation], settings: EvaluationSettings,
                    datamodule: object | None = None) -> dict[str, str | int | float | bool]:
    """Everything that changes the numbers, flat, for ``protocol.<key>`` params: the DataModule's
    ``protocol_settings()`` (when it has it), the evaluation settings, the primary AP per dataset and the resolved
    post-processing parameters per dataset (``postprocess.<dataset>.<key>``)."""
    params: dict[str, str | int | float | bool] = {}
    settings_of = getattr(datamodule, "protocol_settings", None)
    if callable(settings_of):
        params.update(settings_of())
    params.update(settings.protocol_params())
    primaries = {e.name: e.ap_primary for e in evaluations}
    params["ap_primary"] = (next(iter(primaries.values())) if len(set(primaries.values())) == 1
                            else ",".join(f"{k}={v}" for k, v in sorted(primaries.items())))
    for e in evaluations:
        params.update({f"postprocess.{e.family}.{k}": "none" if v is None else v
                       for k, v in e.params.as_dict().items()})
    return params
