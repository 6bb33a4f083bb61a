"""Evaluation presets: which reference pipeline each metric of a run reproduces, and the options on top.

A preset names a reference code base. Per dataset family it gives one *recipe* for the AUC-type metrics (``auc``,
``macro_auc``, ``auc_a``, ``far``, ``auc_class``, ``dmap``) and one for the AP-type metrics (``ap*``): a recipe is
the script it follows, its Steps 2-3 parameters (:class:`PostprocessParams`) and whether each video is cut to whole
feature snippets before the metric. VERA's released code computes XD-Violence AUC and AP with two different scripts,
so ``vera_code`` on XD-Violence reports each number under the script that produced the published one.

================  ==============================================================================================
preset            recipe (AUC / AP), per dataset
================  ==============================================================================================
``vera_code``     UCF-Crime and others: VERA ``compute_auc.py`` for both. XD-Violence: AUC
                  ``compute_auc_XD_Violence.py`` (UCF-style Step 3, every window votes up to 10 windows), AP
                  ``compute_AP_XD_Violence.py`` (sigmoid, frames to 0.1, videos cut to ``16 ((n - 1) // 16)``).
``vera_compute_auc``, ``vera_compute_auc_xd``, ``vera_compute_ap_xd``: one of VERA's three scripts for every metric.
``vera_paper``    VERA's paper text (K = 0.1 h UCF, kernel 30/30 XD, centred), all frames.
``vadclip``       VadCLIP ``ucf_test.py`` / ``xd_test.py``: whole 16-frame snippets, AP step-wise on every dataset.
``rtfm``          RTFM ``test.py``: whole 16-frame snippets (XD-Violence: XDVioDet's ``(n - 1) // 16``), AP trapezoid.
``lavad``         LAVAD ``src/eval.py``: every frame, AP trapezoid on every dataset.
================  ==============================================================================================

The snippet and LAVAD presets evaluate the method's own scores (``step1`` is the number to compare); their Steps 2-3
use ``vera_code``'s AUC recipe. The ground truth's end convention (RTFM and LAVAD include the end frame) is the
DataModule's ``gt_end_inclusive``, recorded with the run.

Options follow the preset after commas: ``vera_code:xd_violence,gt_snippet=16,far=>,far_unit=videos``:

* ``gt_snippet=<s>`` cut every video to whole ``s``-frame snippets for every metric (0: keep every frame);
  ``snippet_rule=floor`` (``n // s`` snippets) or ``minus_one`` (``(n - 1) // s``, XDVioDet and VERA's XD AP script).
* ``far=>=`` or ``far=>`` (MIST/S3R-style), ``far_unit=frames`` (pooled over all frames of normal videos) or
  ``videos`` (mean of per-video rates), ``far_threshold=0.5``.
* ``macro_pad=true``: UBnormal-style macro AUC, each video padded with one normal frame scored 0 and one anomalous
  frame scored 1 (every video then has a value).
* ``norm=float32``: VERA's float32 numpy path in Step 2 (normalise, similarities and softmax in float32).
* ``ap=step|trapz``: the primary AP variant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from copra_bench.errors import EvaluationError

DATASET_FAMILIES = ("ucf_crime", "xd_violence", "shanghaitech", "synthetic", "generic")
DEFAULT_PRESET = "vera_code"
SNIPPET_RULES = ("floor", "minus_one")


@dataclass(frozen=True)
class PostprocessParams:
    """Parameters of Steps 2 and 3 (see :mod:`copra_bench.evaluation.postprocess` for what each does)."""

    fraction: float = 0.15
    temperature: float = 10.0
    top_n_zero: str = "all"              # what int(fraction * n) == 0 means: "all" windows or "one"
    kernel_size: int = 15
    kernel_sigma: float = 10.0
    kernel_grid: str = "vera"            # "vera": linspace(-size//2, size//2, size); "centred"
    short_video: str = "numpy_same"      # videos with fewer windows than the kernel: "numpy_same" or "centred"
    round_window_decimals: int | None = None
    position_weighting: bool = True
    sigmoid: bool = False
    round_frame_decimals: int | None = None
    similarity_dtype: str = "float32"
    normalise_dtype: str = "float64"     # "float32": VERA's numpy path (normalise, similarities, softmax in float32)
    all_windows_up_to: int = 0           # videos of at most this many windows: every window votes (VERA XD scripts)

    def as_dict(self) -> dict:
        return asdict(self)


UCF_CODE = PostprocessParams(round_window_decimals=1)
#: compute_auc_XD_Violence.py: the UCF script's Step 3; every window votes in videos of <= 10 windows.
XD_AUC_CODE = replace(UCF_CODE, all_windows_up_to=10)
#: compute_AP_XD_Violence.py: sigmoid, frames rounded to 0.1, no position weighting; every window votes up to 4
#: windows (int(0.15 n) = 0 up to 6 windows gives all windows as well).
XD_AP_CODE = PostprocessParams(position_weighting=False, sigmoid=True, round_frame_decimals=1, all_windows_up_to=4)
UCF_PAPER = PostprocessParams(fraction=0.10, top_n_zero="one", kernel_grid="centred", short_video="centred")
XD_PAPER = replace(UCF_PAPER, fraction=0.15, kernel_size=30, kernel_sigma=30.0)


@dataclass(frozen=True)
class Recipe:
    """How one group of metrics is computed: the reference ``script``, Steps 2-3 ``params`` and the snippet cut."""

    script: str
    params: PostprocessParams
    gt_snippet: int = 0
    snippet_rule: str = "floor"

    def kept_frames(self, num_frames: int) -> int:
        """Frames of a video that enter the metric (all, or whole snippets)."""
        if self.gt_snippet <= 0:
            return num_frames
        usable = num_frames - 1 if self.snippet_rule == "minus_one" else num_frames
        return self.gt_snippet * (max(usable, 0) // self.gt_snippet)


@dataclass(frozen=True)
class MetricOptions:
    """Metric conventions shared by every recipe of a run."""

    far_compare: str = ">="
    far_unit: str = "frames"
    far_threshold: float = 0.5
    macro_pad: bool = False

    def far_rule(self) -> str:
        unit = "pooled over all frames of normal videos" if self.far_unit == "frames" else "mean over normal videos"
        return f"score {self.far_compare} {self.far_threshold:g}, {unit}"

    def macro_rule(self) -> str:
        return "each video padded with a 0-scored normal and a 1-scored anomalous frame (UBnormal)" if \
            self.macro_pad else "videos with one class skipped"


@dataclass(frozen=True)
class Protocol:
    """A preset resolved for one test set: its family, both recipes, the primary AP and the metric options."""

    preset: str
    family: str
    auc: Recipe
    ap: Recipe
    ap_primary: str
    options: MetricOptions = field(default_factory=MetricOptions)


_DATASET_AP = {"xd_violence": "trapz"}
_VERA_UCF = Recipe("VERA compute_auc.py", UCF_CODE)
_VERA_XD_AUC = Recipe("VERA compute_auc_XD_Violence.py", XD_AUC_CODE)
_VERA_XD_AP = Recipe("VERA compute_AP_XD_Violence.py", XD_AP_CODE, 16, "minus_one")


def _each(auc: Recipe, ap: Recipe | None = None) -> dict[str, tuple[Recipe, Recipe]]:
    return {family: (auc, ap or auc) for family in DATASET_FAMILIES}


def _code_steps(family: str) -> PostprocessParams:
    return XD_AUC_CODE if family == "xd_violence" else UCF_CODE


def _snippets(script: str, xd_rule: str) -> dict[str, tuple[Recipe, Recipe]]:
    out = {}
    for family in DATASET_FAMILIES:
        rule = xd_rule if family == "xd_violence" else "floor"
        recipe = Recipe(script, _code_steps(family), 16, rule)
        out[family] = (recipe, recipe)
    return out


#: ``{preset: {family: (AUC recipe, AP recipe)}}``.
PROTOCOLS: dict[str, dict[str, tuple[Recipe, Recipe]]] = {
    "vera_code": {**_each(_VERA_UCF), "xd_violence": (_VERA_XD_AUC, _VERA_XD_AP)},
    "vera_compute_auc": _each(_VERA_UCF),
    "vera_compute_auc_xd": _each(_VERA_XD_AUC),
    "vera_compute_ap_xd": _each(_VERA_XD_AP),
    "vera_paper": {**_each(Recipe("VERA paper (arXiv 2412.01095)", UCF_PAPER)),
                   "xd_violence": (Recipe("VERA paper (arXiv 2412.01095)", XD_PAPER),) * 2},
    "vadclip": _snippets("VadCLIP src/ucf_test.py, src/xd_test.py", "floor"),
    "rtfm": _snippets("RTFM test.py", "minus_one"),
    "lavad": {f: (Recipe("LAVAD src/eval.py", _code_steps(f)),) * 2 for f in DATASET_FAMILIES},
}
#: Primary AP variant of presets that fix it on every dataset (else the dataset's: trapezoid on XD-Violence).
PRESET_AP = {"vadclip": "step", "rtfm": "trapz", "lavad": "trapz"}
OPTION_KEYS = ("gt_snippet", "snippet_rule", "far", "far_unit", "far_threshold", "macro_pad", "norm", "ap")


def split_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``"name[:family][,key=value...]"`` -> ``(name, forced family or "", options)``."""
    head, *rest = [part.strip() for part in str(spec).split(",")]
    name, _, forced = head.partition(":")
    options: dict[str, str] = {}
    for part in rest:
        key, sep, value = part.partition("=")
        if not sep or key not in OPTION_KEYS:
            raise EvaluationError(f"postprocess {spec!r}: bad option {part!r}; options are key=value with key one of "
                                  f"{', '.join(OPTION_KEYS)}")
        options[key] = value
    return name, forced, options


def forced_family(spec: str) -> str:
    """The dataset family a preset spec forces (``vera_code:xd_violence,...``), or ``""``."""
    return split_spec(spec)[1]


def _choice(spec: str, key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise EvaluationError(f"postprocess {spec!r}: {key}={value!r}; use one of {', '.join(allowed)}")
    return value


def _number(spec: str, key: str, value: str, kind: type) -> float | int:
    try:
        return kind(value)
    except ValueError:
        raise EvaluationError(f"postprocess {spec!r}: {key}={value!r} is not a number") from None


def resolve_protocol(spec: str, family: str) -> Protocol:
    """The protocol a preset spec gives a test set of dataset ``family`` (the test set's own; ``:family`` in the spec
    forces another)."""
    name, forced, options = split_spec(spec)
    if name not in PROTOCOLS:
        raise EvaluationError(f"unknown post-processing preset {name!r}; choose one of {', '.join(PROTOCOLS)} "
                              f"(optionally ':<dataset>' with a dataset of {', '.join(DATASET_FAMILIES)}, then "
                              f"',key=value' options: {', '.join(OPTION_KEYS)})")
    family = forced or family
    if family not in PROTOCOLS[name]:
        where = f"preset {spec!r}" if forced else "the test set's family"
        raise EvaluationError(f"{where}: unknown dataset {family!r}; use one of {', '.join(DATASET_FAMILIES)}")
    auc, ap = PROTOCOLS[name][family]
    ap_primary = PRESET_AP.get(name, _DATASET_AP.get(family, "step"))
    metric = MetricOptions()
    if "gt_snippet" in options or "snippet_rule" in options:
        rule = _choice(spec, "snippet_rule", options.get(
            "snippet_rule", "minus_one" if family == "xd_violence" else "floor"), SNIPPET_RULES)
        if "gt_snippet" in options:  # every metric cut alike
            size = max(int(_number(spec, "gt_snippet", options["gt_snippet"], int)), 0)
            auc, ap = (replace(r, gt_snippet=size, snippet_rule=rule) for r in (auc, ap))
        else:  # the rule of the recipes that cut
            auc, ap = (replace(r, snippet_rule=rule) for r in (auc, ap))
    for key, value in options.items():
        if key == "far":
            metric = replace(metric, far_compare=_choice(spec, key, value, (">=", ">")))
        elif key == "far_unit":
            metric = replace(metric, far_unit=_choice(spec, key, value, ("frames", "videos")))
        elif key == "far_threshold":
            metric = replace(metric, far_threshold=float(_number(spec, key, value, float)))
        elif key == "macro_pad":
            metric = replace(metric, macro_pad=_choice(spec, key, value.lower(), ("true", "false")) == "true")
        elif key == "norm":
            dtype = _choice(spec, key, value, ("float32", "float64"))
            auc, ap = (replace(r, params=replace(r.params, normalise_dtype=dtype)) for r in (auc, ap))
        elif key == "ap":
            ap_primary = _choice(spec, key, value, ("step", "trapz"))
    return Protocol(str(spec), family, auc, ap, ap_primary, metric)


def preset_options(spec: str) -> MetricOptions:
    """The metric options of a spec (they do not depend on the dataset)."""
    return resolve_protocol(spec, forced_family(spec) or "generic").options
