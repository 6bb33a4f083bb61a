"""The evaluation protocol of one test set: the three post-processing steps, and every metric of each step.

Metrics of a step (names as logged, ``test/<set>/<step>/<metric>``):

* ``auc``: micro frame ROC-AUC (all frames of all test videos concatenated).
* ``ap_step`` / ``ap_trapz``: the two AP variants; ``ap`` is the primary one (the preset's, else the dataset's).
* ``macro_auc``: mean of per-video AUCs; videos with one class only (every normal video) are skipped and counted
  (UBnormal's padding is an option).
* ``auc_a`` / ``ap_a``: micro AUC / primary AP on the abnormal videos only.
* ``far``: false-alarm rate, share of frames of normal videos scored ``>= 0.5`` (``>`` and per-video: options).
* ``auc_class/<C>``: micro AUC on the videos of class C plus all normal videos (the videos of the other anomaly
  classes left out); XD-Violence videos with several codes count for each of them.
* ``dmap_<iou>`` (0.1..0.5), ``dmap_mean``: class-agnostic detection mAP, VadCLIP's arithmetic
  (:mod:`~copra_bench.evaluation.detection`).
* ``auc_ci_low/high``, ``ap_ci_low/high``: 95% bootstrap intervals of ``auc`` and ``ap`` (resampled test videos).

AUC-type metrics (``auc``, ``macro_auc``, ``auc_a``, ``far``, ``auc_class``, ``dmap``) follow the preset's AUC
recipe, the AP-type ones its AP recipe (:mod:`~copra_bench.evaluation.recipes`): on XD-Violence ``vera_code`` takes
each from the VERA script that made the published number. An undefined metric is NaN here, ``null`` with its reason
in ``metrics.json``, and not logged to MLflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from copra_bench.errors import EvaluationError
from copra_bench.evaluation.assembly import VideoScores, check_ground_truth
from copra_bench.evaluation.bootstrap import bootstrap_intervals
from copra_bench.evaluation.detection import IOU_THRESHOLDS, anomaly_detection_map
from copra_bench.evaluation.metrics import (
    UNDEFINED,
    SortedFrames,
    curve_metrics,
    false_alarm_rate,
    padded,
    per_video_auc,
)
from copra_bench.evaluation.postprocess import STEPS, three_steps
from copra_bench.evaluation.recipes import (
    DEFAULT_PRESET,
    PostprocessParams,
    Protocol,
    Recipe,
    preset_options,
    resolve_protocol,
    split_spec,
)

#: The dataset's AP variant reported as ``ap``: trapezoid where the field's papers use it (XD-Violence), else
#: sklearn's (a preset may fix another: ``vadclip`` step-wise, ``rtfm`` and ``lavad`` trapezoid).
AP_PRIMARY = {"ucf_crime": "step", "xd_violence": "trapz", "shanghaitech": "step", "synthetic": "step",
              "generic": "step"}
METRICS = ("auc", "ap", "ap_step", "ap_trapz", "macro_auc", "auc_a", "ap_a", "far",
           "auc_ci_low", "auc_ci_high", "ap_ci_low", "ap_ci_high", *(f"dmap_{iou:g}" for iou in IOU_THRESHOLDS),
           "dmap_mean")
NORMAL_CLASSES = frozenset({"Normal", "normal", "A", "0", ""})
CLASS_AUC_CONVENTION = "videos of the class + all normal videos"
DETECTION_MAP = "class-agnostic; VadCLIP getDetectionMAP arithmetic; gt segments = runs of anomalous frames"


@dataclass(frozen=True)
class EvaluationSettings:
    """Choices that change the numbers (all recorded as ``protocol.*`` params). ``postprocess`` is a preset spec,
    ``<preset>[:<dataset>][,<option>=<value>...]`` (:mod:`~copra_bench.evaluation.recipes`)."""

    postprocess: str = DEFAULT_PRESET
    bootstrap_samples: int = 1000
    bootstrap_seed: int = 0
    far_threshold: float = 0.5

    def __post_init__(self) -> None:  # a bad preset spec fails when the module is built, not after training
        resolve_protocol(self.postprocess, "generic")

    def _options(self, protocol: Protocol) -> Protocol:
        if "far_threshold" in split_spec(self.postprocess)[2]:
            return protocol
        return replace(protocol, options=replace(protocol.options, far_threshold=self.far_threshold))

    def protocol(self, family: str) -> Protocol:
        """The preset resolved for a test set of ``family``."""
        return self._options(resolve_protocol(self.postprocess, family))

    def protocol_params(self) -> dict[str, str | int | float]:
        options = replace(preset_options(self.postprocess), far_threshold=self.protocol("generic").options
                          .far_threshold)
        return {"postprocess": self.postprocess, "metric_aggregation": "micro",
                "bootstrap_samples": self.bootstrap_samples, "bootstrap_seed": self.bootstrap_seed,
                "bootstrap_unit": "test video", "far_rule": options.far_rule(), "class_auc": CLASS_AUC_CONVENTION,
                "macro_auc": options.macro_rule(), "detection_map": DETECTION_MAP}


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
    protocol: Protocol | None = None

    def mlflow_metrics(self) -> dict[str, float]:
        return {f"test/{self.name}/{step}/{k}": v for step, m in self.steps.items() for k, v in m.logged().items()}

    def recipes(self) -> dict:
        """Which reference script each metric group follows, its snippet cut and (AP) its Steps 2-3 parameters."""
        if self.protocol is None:
            return {}
        out = {}
        for key, recipe in (("auc", self.protocol.auc), ("ap", self.protocol.ap)):
            out[key] = {"script": recipe.script, "gt_snippet": recipe.gt_snippet, "snippet_rule": recipe.snippet_rule}
        out["ap"]["postprocess_params"] = self.protocol.ap.params.as_dict()
        return out

    def as_json(self) -> dict:
        return {"dataset": self.family, "ap_primary": self.ap_primary, "postprocess": self.settings.postprocess,
                "postprocess_params": self.params.as_dict(), "recipes": self.recipes(),
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


def _cut(recipe: Recipe) -> tuple[int, str]:
    return (recipe.gt_snippet, recipe.snippet_rule) if recipe.gt_snippet > 0 else (0, "")


def _kept(scores: list[np.ndarray], videos: list[VideoScores], recipe: Recipe) -> tuple[list, list]:
    """Per video, the scores and ground truth a recipe scores (all frames, or whole snippets)."""
    kept = [recipe.kept_frames(v.gt.shape[0]) for v in videos]
    return [s[:k] for s, k in zip(scores, kept, strict=True)], [v.gt[:k] for v, k in zip(videos, kept)]


def _sorted(scores: list[np.ndarray], gts: list[np.ndarray]) -> SortedFrames:
    video_index = np.repeat(np.arange(len(gts)), [g.shape[0] for g in gts])
    return SortedFrames.build(np.concatenate(scores), np.concatenate(gts), video_index)


def step_metrics(frame_scores: list[np.ndarray], videos: list[VideoScores], *, ap_primary: str,
                 settings: EvaluationSettings, sigmoid_scores: bool = False,
                 ap_scores: list[np.ndarray] | None = None, protocol: Protocol | None = None) -> StepMetrics:
    """All metrics of one step from per-video frame scores: the AUC-type metrics from ``frame_scores`` under the
    protocol's AUC recipe, the AP-type ones from ``ap_scores`` (default: the same scores) under its AP recipe."""
    protocol = protocol or settings.protocol("generic")
    options = protocol.options
    auc_scores, auc_gts = _kept(frame_scores, videos, protocol.auc)
    frames = _sorted(auc_scores, auc_gts)
    same = ap_scores is None and _cut(protocol.ap) == _cut(protocol.auc)
    ap_frames = frames if same else _sorted(*_kept(frame_scores if ap_scores is None else ap_scores, videos,
                                                   protocol.ap))
    labels = np.array([v.label for v in videos])
    values: dict[str, float] = dict.fromkeys(METRICS, UNDEFINED)
    undefined: dict[str, str] = {}
    notes: list[str] = []

    primary = lambda m: m.ap_step if ap_primary == "step" else m.ap_trapz
    micro = curve_metrics(frames)
    on_ap = micro if ap_frames is frames else curve_metrics(ap_frames)
    values.update(auc=micro.auc, ap_step=on_ap.ap_step, ap_trapz=on_ap.ap_trapz, ap=primary(on_ap))
    for reason, keys in ((micro.reason, ("auc", "auc_ci_low", "auc_ci_high")),
                         (on_ap.reason, ("ap", "ap_step", "ap_trapz", "ap_ci_low", "ap_ci_high"))):
        if reason:
            undefined.update(dict.fromkeys(keys, reason))

    per_video = per_video_auc(padded(frames, len(videos)) if options.macro_pad else frames, len(videos))
    usable = np.isfinite(per_video)
    if usable.any():
        values["macro_auc"] = float(per_video[usable].mean())
        notes.append(f"macro_auc over {int(usable.sum())} of {len(videos)} videos ({options.macro_rule()}; "
                     f"{int((~usable).sum())} with one class only skipped)")
    else:
        undefined["macro_auc"] = f"no video has both normal and anomalous frames ({len(videos)} videos)"

    abnormal = np.flatnonzero(labels == 1)
    on_abnormal = curve_metrics(frames.of_videos(abnormal))
    ap_abnormal = on_abnormal if ap_frames is frames else curve_metrics(ap_frames.of_videos(abnormal))
    values["auc_a"], values["ap_a"] = on_abnormal.auc, primary(ap_abnormal)
    if on_abnormal.reason:
        undefined["auc_a"] = f"abnormal videos only: {on_abnormal.reason}"
    if ap_abnormal.reason:
        undefined["ap_a"] = f"abnormal videos only: {ap_abnormal.reason}"

    normal_videos = np.flatnonzero(labels == 0)
    if sigmoid_scores:
        undefined["far"] = "scores passed through a sigmoid (VERA XD code): every frame scores >= 0.5"
    elif normal_videos.size == 0:
        undefined["far"] = "no normal test videos"
    else:
        values["far"] = false_alarm_rate(frames.of_videos(normal_videos), options.far_threshold,
                                         compare=options.far_compare, unit=options.far_unit)

    auc_class: dict[str, float] = {}
    for cls in _classes_of(videos):
        members = [i for i, v in enumerate(videos) if cls in v.classes or v.label == 0]
        result = curve_metrics(frames.of_videos(np.array(members)))
        auc_class[cls] = result.auc
        if result.reason:
            undefined[f"auc_class/{cls}"] = result.reason
    if not auc_class:
        undefined["auc_class"] = "no anomaly classes recorded for the abnormal test videos"

    dmap = anomaly_detection_map(auc_scores, auc_gts)
    values.update({f"dmap_{iou:g}": value for iou, value in dmap.items()})
    values["dmap_mean"] = float(np.mean(list(dmap.values())))

    if settings.bootstrap_samples > 0:
        runs = [("auc", frames, micro.reason)] + ([] if ap_frames is frames else [("ap", ap_frames, on_ap.reason)])
        for key, sorted_frames, reason in runs:
            if reason:
                continue
            ci = bootstrap_intervals(sorted_frames, len(videos), samples=settings.bootstrap_samples,
                                     seed=settings.bootstrap_seed, ap_variant=ap_primary)
            if key == "auc":
                values.update(auc_ci_low=ci.auc[0], auc_ci_high=ci.auc[1])
            if key == "ap" or ap_frames is frames:
                values.update(ap_ci_low=ci.ap[0], ap_ci_high=ci.ap[1])
            if ci.undefined_samples:
                notes.append(f"bootstrap ({key}): {ci.undefined_samples} of {ci.samples} replicates drew one class "
                             "only and were left out")
    else:
        undefined.update({k: "bootstrap_samples = 0" for k in ("auc_ci_low", "auc_ci_high", "ap_ci_low",
                                                               "ap_ci_high") if k not in undefined})
    if micro.reason:
        notes.append(f"AUC and AP undefined: {micro.reason}")
    return StepMetrics(values, auc_class, undefined, len(videos), int(frames.labels.size),
                       int(frames.labels.sum()), notes)


def _all_steps(name: str, videos: list[VideoScores], stride: int,
               params: PostprocessParams) -> dict[str, list[np.ndarray] | None]:
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
    return per_step


def evaluate_test_set(name: str, videos: list[VideoScores], stride: int,
                      settings: EvaluationSettings = EvaluationSettings(), *, family: str) -> TestSetEvaluation:
    """Post-process every video (three steps, per recipe) and compute every metric of every step. ``family`` is the
    test set's dataset family (it picks the preset's recipes and the primary AP unless the preset forces one)."""
    check_videos(name, videos)
    protocol = settings.protocol(family)
    auc_steps = _all_steps(name, videos, stride, protocol.auc.params)
    ap_steps = auc_steps if protocol.ap.params == protocol.auc.params else _all_steps(
        name, videos, stride, protocol.ap.params)
    results: dict[str, StepMetrics] = {}
    for step in STEPS:
        scores = auc_steps[step]
        if scores is None:
            reason = "no per-window features saved (keep_features=false): Step 2 and 3 need them"
            results[step] = StepMetrics(dict.fromkeys(METRICS, UNDEFINED), {}, dict.fromkeys(METRICS, reason),
                                        len(videos), int(sum(v.gt.size for v in videos)),
                                        int(sum(int(v.gt.sum()) for v in videos)), [reason])
            continue
        results[step] = step_metrics(scores, videos, ap_primary=protocol.ap_primary, settings=settings,
                                     sigmoid_scores=step == "step3" and protocol.auc.params.sigmoid,
                                     ap_scores=None if ap_steps is auc_steps else ap_steps[step], protocol=protocol)
    return TestSetEvaluation(name, protocol.family, protocol.ap_primary, protocol.auc.params, settings, results,
                             auc_steps, protocol)


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
        if e.protocol is None:
            continue
        auc, ap = e.protocol.auc, e.protocol.ap
        params.update({f"postprocess.{e.family}.auc_recipe": auc.script, f"postprocess.{e.family}.ap_recipe": ap.script,
                       f"postprocess.{e.family}.auc_gt_snippet": f"{auc.gt_snippet} ({auc.snippet_rule})",
                       f"postprocess.{e.family}.ap_gt_snippet": f"{ap.gt_snippet} ({ap.snippet_rule})"})
        if ap.params != auc.params:
            params.update({f"postprocess.{e.family}.ap.{k}": "none" if v is None else v
                           for k, v in ap.params.as_dict().items()})
    return params
