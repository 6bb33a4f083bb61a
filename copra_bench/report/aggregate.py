"""Grouping and statistics: protocol groups, seed averaging, sweep-axis marginals, the cross-domain matrix.

Two rules keep numbers comparable:

* Runs are split into **protocol groups** by their ``protocol.*`` / ``conventions.*`` params (GT convention, AP
  variant, post-processing preset, windows...). Keys that only name the dataset (``protocol.dataset``,
  ``protocol.annotation_source``, ``protocol.<dataset name>.*`` ...) do not split groups, so a cross-domain matrix can
  span datasets. Runs without any protocol param never get here: they are not comparable evaluations
  (:attr:`RunRecord.exclusion`) and the report lists them under "not in the tables".
* Within a group, runs are averaged only when **every** param is equal except seeds and bookkeeping
  (:func:`variant_key`): all protocol params included, so differing protocols are never averaged.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from copra_bench.report.runs import RunRecord

PROTOCOL_PREFIXES = ("protocol.", "conventions.")
#: Protocol params that identify the data rather than a convention: they never split protocol groups.
DATASET_PROTOCOL_KEYS = ("protocol.dataset", "protocol.annotation_source", "protocol.source", "protocol.fps",
                         "protocol.frames_fps")
#: Params that do not change what is measured (paths of logs, run bookkeeping).
BOOKKEEPING_PREFIXES = ("trainer.logger.", "trainer.default_root_dir", "ckpt_path", "config", "_instantiator")
PRIMARY_METRICS = ("auc", "ap")


def is_seed_key(key: str) -> bool:
    """``seed_everything``, ``...seed``, ``..._seed`` outside the protocol (e.g. ``model.init_args.backbone_seed``)."""
    last = key.rsplit(".", 1)[-1]
    return not key.startswith(PROTOCOL_PREFIXES) and (key == "seed_everything" or last == "seed"
                                                      or last.endswith("_seed"))


def _dataset_names(run: RunRecord) -> set[str]:
    names = set(run.test_sets) | {run.dataset, run.train_dataset}
    return names | {part for name in list(names) for part in name.split("_to_")}


def protocol_settings(run: RunRecord) -> dict[str, str]:
    """The run's protocol params that define a group (dataset-identity keys left out)."""
    datasets = _dataset_names(run)
    out = {}
    for key, value in run.params.items():
        if not key.startswith(PROTOCOL_PREFIXES) or key in DATASET_PROTOCOL_KEYS:
            continue
        if any(part in datasets for part in key.split(".")[1:-1]):
            continue
        out[key] = value
    return out


@dataclass
class ProtocolGroup:
    """Runs sharing one protocol (``settings``: its protocol params, the dataset-identity ones left out)."""

    index: int
    settings: dict[str, str]
    runs: list[RunRecord] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"Protocol group {self.index}"


def group_by_protocol(runs: list[RunRecord]) -> list[ProtocolGroup]:
    """Protocol groups, largest first."""
    buckets: dict[tuple, list[RunRecord]] = defaultdict(list)
    for run in runs:
        buckets[tuple(sorted(protocol_settings(run).items()))].append(run)
    ordered = sorted(buckets.items(), key=lambda item: (-len(item[1]), item[0]))
    return [ProtocolGroup(i + 1, dict(key), members) for i, (key, members) in enumerate(ordered)]


def group_differences(groups: list[ProtocolGroup]) -> dict[str, list[str]]:
    """Protocol key -> its value in each group (``"(absent)"``), for keys that differ between groups."""
    keys = sorted({k for g in groups for k in g.settings})
    out = {}
    for key in keys:
        values = [g.settings.get(key, "(absent)") for g in groups]
        if len(set(values)) > 1:
            out[key] = values
    return out


def variant_key(run: RunRecord, *, ignore_data: bool = False) -> tuple:
    """What must be equal for runs to be averaged: every param but seeds and bookkeeping (and data, if asked)."""
    items = []
    for key, value in run.params.items():
        if key.startswith(BOOKKEEPING_PREFIXES) or is_seed_key(key):
            continue
        if ignore_data and (key.startswith(("data.", "protocol.")) or "." not in key):
            continue
        items.append((key, value))
    return (run.method, tuple(sorted(items)))


#: Longest variant label shown in a table cell; a longer one becomes ``v<i>: <start>…`` (full text in the details).
MAX_LABEL = 40


@dataclass
class Variant:
    """Runs averaged together (they differ in seeds only).

    Attributes:
        label: Short cell text telling the variant from the other variants of the same method ("" if it has none).
        full_label: Every ``key=value`` that differs between the method's variants (the details block lists it).
    """

    method: str
    runs: list[RunRecord]
    label: str = ""
    full_label: str = ""

    @property
    def train_dataset(self) -> str:
        return self.runs[0].train_dataset

    @property
    def seeds(self) -> list[str]:
        return sorted({r.params.get("seed_everything", "?") for r in self.runs})

    @property
    def name(self) -> str:
        """``method`` or ``method label``: what a heading or a legend calls the variant."""
        return f"{self.method} {self.label}".strip()


def _is_label_key(key: str) -> bool:
    """Config keys a variant label may name: not protocol params, not counts derived from the config
    (``model.params_trainable``: one dot, no ``init_args``), not top-level keys."""
    if key.startswith(PROTOCOL_PREFIXES) or "." not in key:
        return False
    return key.count(".") > 1 or key.endswith(".class_path")


def variants(runs: list[RunRecord], *, ignore_data: bool = False) -> list[Variant]:
    """Runs grouped by :func:`variant_key`. A variant is labelled by the keys that differ between the variants of
    **its own method** (``data.*`` keys only where the label would not tell two variants apart otherwise)."""
    buckets: dict[tuple, list[RunRecord]] = defaultdict(list)
    for run in runs:
        buckets[variant_key(run, ignore_data=ignore_data)].append(run)
    out = []
    for method in sorted({key[0] for key in buckets}):
        keys = [key for key in buckets if key[0] == method]
        params = [dict(k[1]) for k in keys]
        every = {p for a in params for p in a if _is_label_key(p)}
        differing = sorted(p for p in every if len({a.get(p) for a in params}) > 1)
        without_data = [p for p in differing if not p.startswith("data.")]
        shown = without_data if _tells_apart(keys, buckets, without_data) else differing
        for i, key in enumerate(sorted(keys, key=lambda k: _label(dict(k[1]), shown))):
            full = _label(dict(key[1]), shown)
            label = full if len(full) <= MAX_LABEL else f"v{i + 1}: {full[:MAX_LABEL - 6]}…"
            out.append(Variant(method=method, runs=buckets[key], label=label, full_label=full))
    return sorted(out, key=lambda v: (v.method, v.train_dataset, v.full_label))


def _label(params: dict[str, str], keys: list[str]) -> str:
    return ", ".join(f"{_short(p)}={params.get(p, '-')}" for p in keys)


def _tells_apart(keys: list[tuple], buckets: dict, shown: list[str]) -> bool:
    seen = {(buckets[k][0].train_dataset, _label(dict(k[1]), shown)) for k in keys}
    return len(seen) == len(keys)


def _short(key: str) -> str:
    parts = [p for p in key.split(".") if p != "init_args"]
    return ".".join(parts[-2:]) if parts[0] != "model" else ".".join(parts[1:])


def method_settings(variants_: list[Variant]) -> tuple[list[tuple[str, str]], dict[str, list[tuple[str, str]]]]:
    """``(shared, per method)``: the config settings every run has in common, and for each method those its runs
    share that are not common to every run; keys without ``init_args`` (``model.init_args.lr`` -> ``model.lr``).

    Left out: protocol, seed and bookkeeping keys, top-level copies of the model's hyperparameters (``lr``: the
    same value as ``model.init_args.lr``), unset (``None``) values, and ``trainer.*`` in the shared list (the
    runs' ``config.yaml`` artifacts hold them all)."""
    def settings(run: RunRecord) -> dict[str, str]:
        return {k: v for k, v in run.params.items() if "." in k and v != "None" and not is_seed_key(k)
                and not k.startswith(PROTOCOL_PREFIXES + BOOKKEEPING_PREFIXES)}

    def common(runs: list[RunRecord]) -> dict[str, str]:
        first = settings(runs[0])
        return {k: v for k, v in first.items() if all(settings(r).get(k) == v for r in runs[1:])}

    def readable(items) -> list[tuple[str, str]]:
        return sorted((k.replace(".init_args.", ".").replace(".init_args", ""), v) for k, v in items)

    everyone = common([r for v in variants_ for r in v.runs]) if variants_ else {}
    per_method = {}
    for method in sorted({v.method for v in variants_}):
        mine = common([r for v in variants_ if v.method == method for r in v.runs])
        per_method[method] = readable((k, v) for k, v in mine.items() if everyone.get(k) != v)
    return readable((k, v) for k, v in everyone.items() if not k.startswith("trainer.")), per_method


@dataclass
class Stat:
    """Mean, sample standard deviation (n-1; None for n = 1) and count of finite values."""

    mean: float | None
    std: float | None
    n: int


def mean_std(values: list[float]) -> Stat:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return Stat(None, None, 0)
    return Stat(statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else None, len(finite))


def stat_of(runs: list[RunRecord], test_set: str, step: str, metric: str) -> Stat:
    return mean_std([r.results[(test_set, step, metric)] for r in runs if (test_set, step, metric) in r.results])


def steps_of(runs: list[RunRecord], test_set: str | None = None) -> list[str]:
    return sorted({s for r in runs for (t, s, _) in r.results if test_set is None or t == test_set},
                  key=lambda s: int(s[4:]) if s[4:].isdigit() else 0)


def metrics_of(runs: list[RunRecord], test_set: str) -> list[str]:
    """Metric names present for ``test_set`` (per-class AUCs left out), in a fixed readable order."""
    order = ("auc", "ap", "ap_step", "ap_trapz", "macro_auc", "auc_a", "ap_a", "far")
    found = {m for r in runs for (t, _, m) in r.results if t == test_set and "/" not in m and "_ci_" not in m}
    return [m for m in order if m in found] + sorted(found - set(order))


def classes_of(runs: list[RunRecord], test_set: str) -> list[str]:
    return sorted({m.split("/", 1)[1] for r in runs for (t, _, m) in r.results
                   if t == test_set and m.startswith("auc_class/")})


def axis_marginals(runs: list[RunRecord]) -> dict[str, dict[str, dict[str, list[RunRecord]]]]:
    """sweep id -> axis key -> axis value -> runs with that value (from the ``sweep.axes`` tag)."""
    import json

    out: dict[str, dict[str, dict[str, list[RunRecord]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for run in runs:
        if not run.sweep_id or "sweep.axes" not in run.tags:
            continue
        try:
            axes = json.loads(run.tags["sweep.axes"])
        except ValueError:
            continue
        for key, value in axes.items():
            out[run.sweep_id][key][str(value)].append(run)
    return out


def cross_domain_cells(runs: list[RunRecord], metric: str, step: str) -> dict[tuple[str, str], Stat]:
    """(trained on, tested on) -> stat over runs; the basis of the heatmap."""
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for run in runs:
        for (test_set, s, m), value in run.results.items():
            if s == step and m == metric:
                cells[(run.train_dataset, test_set)].append(value)
    return {key: mean_std(values) for key, values in cells.items()}
