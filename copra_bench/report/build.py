"""Assemble the leaderboard document from run records (see :mod:`copra_bench.report.aggregate` for the rules).

Per protocol group and test set, the leaderboard has one row per method x variant and one column per primary
metric (AUC, AP) and post-processing step: mean ± std over seeds, the bootstrap interval under it, the best value
per column marked (:mod:`copra_bench.report.ranking`). The other metrics are one row per step in a collapsed table.
"""

from __future__ import annotations

import time
from collections import Counter

from copra_bench.report import aggregate as agg
from copra_bench.report import sections, transfer_section
from copra_bench.report.document import Document, Table
from copra_bench.report.ranking import LEGEND, entry_of, fmt, marked_cells
from copra_bench.report.runs import ReportError, RunRecord


def build_document(experiment: str, tracking_uri: str, runs: list[RunRecord], *,
                   images: bool = True) -> Document:
    """The whole report. Raises :class:`ReportError` when no run is a finished evaluation or transfer run."""
    transfers = [r for r in runs if transfer_section.is_transfer(r)]
    runs = [r for r in runs if not transfer_section.is_transfer(r)]
    evaluated = [r for r in runs if r.exclusion is None]
    if not evaluated and not any(r.status == "FINISHED" for r in transfers):
        counts = ", ".join(f"{n} {s}" for s, n in Counter(r.status for r in runs).items()) or "no runs at all"
        reasons = "; ".join(sorted({r.exclusion for r in runs if r.exclusion})) or "none"
        raise ReportError(f"experiment {experiment!r} in {tracking_uri} has no finished runs with test metrics "
                          f"({counts}; {reasons}); run `python -m copra_bench fit ...` or a sweep first, or pick "
                          "another --experiment")
    doc = Document(f"copra_bench leaderboard: {experiment}")
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(Counter(r.status for r in runs).items()))
    doc.p(f"Tracking store {tracking_uri}; {len(runs)} runs ({statuses}), {len(evaluated)} of them evaluations in "
          f"the tables; built {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. AUC/AP/FAR in %: mean ± "
          "sample std over the runs that differ only in seeds (n = runs); [low, high] under it is the 95 % "
          "bootstrap interval over test videos (mean of the per-run bounds).")
    doc.p(LEGEND)
    groups = agg.group_by_protocol(evaluated)
    if len(groups) > 1:
        doc.h(1, "Why there are several protocol groups")
        doc.warn("These runs were evaluated under different protocol settings, so their numbers are not comparable "
                 "and are never averaged together. Each group below has its own tables.")
        diffs = agg.group_differences(groups)
        doc.blocks.append(Table(["protocol param", *[g.title for g in groups]],
                                [[k, *v] for k, v in diffs.items()]))
    for group in groups:
        _group_section(doc, group)
    sections.axes(doc, groups)
    sections.paper_comparison(doc, [(g, agg.variants(g.runs)) for g in groups])
    transfer_section.transfer(doc, tracking_uri, transfers)
    sections.not_in_tables(doc, [r for r in runs if r.exclusion is not None])
    sections.runs_and_artifacts(doc, evaluated, images=images)
    return doc


def _group_section(doc: Document, group: agg.ProtocolGroup) -> None:
    doc.h(1, f"{group.title} ({len(group.runs)} runs)")
    doc.blocks.append(("details", "protocol settings of this group", [("kv", sorted(group.settings.items()))]))
    variants = agg.variants(group.runs)
    for test_set in sorted({t for r in group.runs for t in r.test_sets}):
        _leaderboard(doc, test_set, [v for v in variants if any(test_set in r.test_sets for r in v.runs)])
    _method_settings(doc, variants)
    sections.matrix(doc, group.runs)


def _members(variant: agg.Variant, test_set: str) -> list[RunRecord]:
    return [r for r in variant.runs if test_set in r.test_sets]


def _seeds(variant: agg.Variant, members: list[RunRecord]) -> str:
    return f"{len(members)} ({','.join(variant.seeds)})"


def _leaderboard(doc: Document, test_set: str, variants: list[agg.Variant]) -> None:
    runs = [r for v in variants for r in v.runs]
    steps = agg.steps_of(runs, test_set)
    metrics = agg.metrics_of(runs, test_set)
    primary = [(test_set, s, m) for m in agg.PRIMARY_METRICS if m in metrics for s in steps]
    members = [_members(v, test_set) for v in variants]
    cells = marked_cells([[entry_of(m, *column) for column in primary] for m in members], [c[2] for c in primary])
    rows = [[v.method, v.label or "-", v.train_dataset, _seeds(v, m), *c]
            for v, m, c in zip(variants, members, cells, strict=True)]
    doc.h(2, f"Leaderboard: tested on {test_set}")
    doc.blocks.append(Table(["method", "variant", "trained on", "n (seeds)",
                             *[f"{m.upper()} % {s}" for _, s, m in primary]], rows, wrap=(1, 2)))
    others = [m for m in metrics if m not in agg.PRIMARY_METRICS]
    if others:
        other_rows = []
        for step in steps:
            step_cells = marked_cells([[entry_of(m, test_set, step, o) for o in others] for m in members], others)
            other_rows += [[v.method, v.label or "-", step, *c] for v, c in zip(variants, step_cells, strict=True)]
        doc.blocks.append(("details", f"other metrics on {test_set} ({', '.join(others)}), per step",
                           [Table(["method", "variant", "step", *others], other_rows, wrap=(1,),
                                  note="best marked per step and column; FAR: lower is better")]))
    class_names = agg.classes_of(runs, test_set)
    if class_names:
        class_rows = [[v.method, v.label or "-", step,
                       *[fmt(agg.stat_of(m, test_set, step, f"auc_class/{c}")) for c in class_names]]
                      for v, m in zip(variants, members, strict=True) for step in agg.steps_of(m, test_set)]
        doc.blocks.append(("details", f"per-class AUC on {test_set}",
                           [Table(["method", "variant", "step", *class_names], class_rows, wrap=(1,))]))


def _method_settings(doc: Document, variants: list[agg.Variant]) -> None:
    """What each method ran with: the settings all runs share, then per method its own and its variants."""
    shared, per_method = agg.method_settings(variants)
    doc.h(2, "Method settings")
    doc.p("The variant column names only what differs between runs of the same method; the rest of each method's "
          "config is here (init_args left out of the keys; trainer.* and unset values: each run's config.yaml).")
    doc.blocks.append(("details", f"shared by every run ({len(shared)} settings)", [("kv", shared)]))
    for method, settings in per_method.items():
        mine = [v for v in variants if v.method == method]
        blocks: list = [("kv", settings)]
        if len(mine) > 1:
            blocks.insert(0, ("kv", [(f"variant {v.label or '-'}", v.full_label or "-") for v in mine]))
        doc.blocks.append(("details", f"{method}: {len(mine)} variant(s), {len(settings)} settings of its own",
                           blocks))
