"""Assemble the leaderboard document from run records (see :mod:`copra_bench.report.aggregate` for the rules)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from copra_bench.report import aggregate as agg
from copra_bench.report.document import Document, Image, Table
from copra_bench.report.paper import PAPER, PAPER_ROWS, matching_rows
from copra_bench.report.runs import ReportError, RunRecord

CI_BOUNDS = {"auc": ("auc_ci_low", "auc_ci_high"), "ap": ("ap_ci_low", "ap_ci_high")}
PERCENT_HINTS = ("auc", "ap", "far", "acc")


def _is_percent(metric: str) -> bool:
    return any(h in metric.split("/")[0] for h in PERCENT_HINTS)


def fmt(stat: agg.Stat, metric: str = "auc") -> str:
    """``84.12 ± 0.31`` (percent for AUC/AP/FAR-like metrics), ``84.12`` for one run, ``-`` for none."""
    if stat.mean is None:
        return "-"
    scale, digits = (100.0, 2) if _is_percent(metric) else (1.0, 4)
    text = f"{scale * stat.mean:.{digits}f}"
    return text + (f" ± {scale * stat.std:.{digits}f}" if stat.std is not None else "")


def _cell(runs: list[RunRecord], test_set: str, step: str, metric: str) -> str:
    text = fmt(agg.stat_of(runs, test_set, step, metric), metric)
    if metric in CI_BOUNDS and text != "-":
        low = agg.stat_of(runs, test_set, step, CI_BOUNDS[metric][0])
        high = agg.stat_of(runs, test_set, step, CI_BOUNDS[metric][1])
        if low.mean is not None and high.mean is not None:
            text += f" [{100 * low.mean:.1f}, {100 * high.mean:.1f}]"
    return text


def build_document(experiment: str, tracking_uri: str, runs: list[RunRecord], *,
                   images: bool = True) -> Document:
    """The whole report. Raises :class:`ReportError` when no run is FINISHED."""
    finished = [r for r in runs if r.status == "FINISHED"]
    if not finished:
        counts = ", ".join(f"{n} {s}" for s, n in Counter(r.status for r in runs).items()) or "no runs at all"
        raise ReportError(f"experiment {experiment!r} in {tracking_uri} has no finished runs ({counts}); run "
                          "`python -m copra_bench fit ...` or a sweep first, or pick another --experiment")
    doc = Document(f"copra_bench leaderboard: {experiment}")
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(Counter(r.status for r in runs).items()))
    doc.p(f"Tracking store {tracking_uri}; {len(runs)} runs ({statuses}); built "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Only FINISHED runs enter the tables. AUC/AP/FAR in "
          "%, mean ± sample std over runs that differ only in seeds; [low, high] is the bootstrap 95% interval "
          "(mean of the per-run bounds) when the runs logged one.")
    groups = agg.group_by_protocol(finished)
    if len(groups) > 1:
        doc.h(1, "Why there are several protocol groups")
        doc.warn("These runs were evaluated under different protocol settings, so their numbers are not comparable "
                 "and are never averaged together. Each group below has its own tables.")
        diffs = agg.group_differences(groups)
        doc.blocks.append(Table(["protocol param", *[g.title for g in groups]],
                                [[k, *v] for k, v in diffs.items()]))
    for group in groups:
        _group_section(doc, group, images=images)
    _axes(doc, groups)
    _paper_section(doc)
    _runs_section(doc, runs, images=images)
    return doc


def _group_section(doc: Document, group: agg.ProtocolGroup, *, images: bool) -> None:
    doc.h(1, f"{group.title} ({len(group.runs)} runs)")
    if group.settings:
        doc.blocks.append(("details", "protocol settings of this group",
                           [Table(["param", "value"], [[k, v] for k, v in group.settings.items()])]))
    else:
        doc.p("These runs record no protocol.* params (made before protocol tracking existed): their conventions "
              "are unknown, so they are kept apart from every other group.")
    runs = group.runs
    test_sets = sorted({t for r in runs for t in r.test_sets})
    variants = agg.variants(runs)
    for test_set in test_sets:
        _leaderboard(doc, test_set, [v for v in variants if any(test_set in r.test_sets for r in v.runs)])
    _matrix(doc, runs)


def _leaderboard(doc: Document, test_set: str, variants: list[agg.Variant]) -> None:
    runs = [r for v in variants for r in v.runs]
    metrics = agg.metrics_of(runs, test_set)
    headers = ["method", "trained on", "variant", "runs (seeds)", "step", *metrics]
    rows, classes = [], []
    for variant in variants:
        members = [r for r in variant.runs if test_set in r.test_sets]
        for step in agg.steps_of(members, test_set):
            rows.append([variant.method, variant.train_dataset, variant.label or "-",
                         f"{len(members)} ({','.join(variant.seeds)})", step,
                         *[_cell(members, test_set, step, m) for m in metrics]])
            classes.append("")
        backbone = members[0].params.get("model.init_args.backbone", "") if members else ""
        for row in matching_rows(variant.method, backbone, variant.train_dataset, test_set):
            for i, value in enumerate(row.steps):
                cells = [f"{value:.2f} (paper)" if m == row.metric else "" for m in metrics]
                rows.append([f"{row.method} ({PAPER})", row.dataset, f"{row.backbone} {row.note}".strip(), "-",
                             f"step{i + 1}", *cells])
                classes.append("paper")
    doc.h(2, f"Leaderboard: tested on {test_set}")
    doc.blocks.append(Table(headers, rows, row_classes=classes,
                            note="Rows in italics are the paper's reported numbers, not results of this benchmark."
                            if "paper" in classes else ""))
    class_names = agg.classes_of(runs, test_set)
    if class_names:
        class_rows = []
        for variant in variants:
            members = [r for r in variant.runs if test_set in r.test_sets]
            for step in agg.steps_of(members, test_set):
                class_rows.append([variant.method, variant.label or "-", step,
                                   *[fmt(agg.stat_of(members, test_set, step, f"auc_class/{c}")) for c in class_names]])
        doc.blocks.append(("details", f"per-class AUC on {test_set}",
                           [Table(["method", "variant", "step", *class_names], class_rows)]))


def _matrix(doc: Document, runs: list[RunRecord]) -> None:
    trained = sorted({r.train_dataset for r in runs})
    tested = sorted({t for r in runs for t in r.test_sets})
    if len(trained) < 2 and len(tested) < 2:
        return
    doc.h(2, "Cross-domain matrix (rows: trained on, columns: tested on)")
    for variant in agg.variants(runs, ignore_data=True):
        steps = agg.steps_of(variant.runs)
        for metric in agg.PRIMARY_METRICS:
            for step in sorted({steps[0], steps[-1]}) if steps else []:
                cells = agg.cross_domain_cells(variant.runs, metric, step)
                if len(cells) < 2:
                    continue
                values = [c.mean for c in cells.values() if c.mean is not None]
                low, high = min(values), max(values)
                rows, heat = [], []
                for source in trained:
                    stats = [cells.get((source, t), agg.Stat(None, None, 0)) for t in tested]
                    rows.append([source, *[fmt(s, metric) for s in stats]])
                    heat.append([None, *[None if s.mean is None else (s.mean - low) / ((high - low) or 1.0)
                                         for s in stats]])
                title = f"{variant.method} {variant.label}".strip() + f": {metric.upper()} %, {step}"
                doc.blocks.append(Table(["trained on \\ tested on", *tested], rows, title=title, heat=heat))


def _axes(doc: Document, groups: list[agg.ProtocolGroup]) -> None:
    """One table per sweep axis. A row is (axis value, protocol group): an axis that changes a protocol param
    (e.g. the conditioning unit) still gets one table, but runs of different groups are never averaged."""
    group_of = {r.run_id: g for g in groups for r in g.runs}
    runs = [r for g in groups for r in g.runs]
    for sweep_id, axes in sorted(agg.axis_marginals(runs).items()):
        doc.h(1, f"Sweep {sweep_id}: one table per axis")
        for axis, by_value in axes.items():
            members = [r for rs in by_value.values() for r in rs]
            columns = [(t, s, m) for t in sorted({t for r in members for t in r.test_sets})
                       for s in agg.steps_of(members, t) for m in agg.PRIMARY_METRICS]
            rows = []
            for value, value_runs in by_value.items():
                for group in groups:
                    rs = [r for r in value_runs if group_of[r.run_id] is group]
                    if rs:
                        rows.append([value, group.title, str(len(rs)),
                                     *[fmt(agg.stat_of(rs, t, s, m), m) for t, s, m in columns]])
            doc.blocks.append(Table([axis, "protocol group", "runs", *[f"{t} {s} {m.upper()}" for t, s, m in columns]],
                                    rows, title=f"axis {axis}",
                                    note="mean ± std over the finished runs of the sweep with that value and "
                                         "protocol group (the other axes averaged out)"))


def _paper_section(doc: Document) -> None:
    doc.h(1, "Reported by the paper (not reproduced here)")
    doc.p(f"{PAPER}. UCF-Crime: frame AUC %; XD-Violence: AP %. Context only: different hardware, checkpoints "
          "and possibly protocol details.")
    doc.blocks.append(Table(["backbone", "data", "method", "metric", "step1", "step2", "step3", "note"],
                            [[r.backbone, r.dataset, r.method, r.metric, *[f"{v:.2f}" for v in r.steps], r.note]
                             for r in PAPER_ROWS], row_classes=["paper"] * len(PAPER_ROWS)))


def _runs_section(doc: Document, runs: list[RunRecord], *, images: bool) -> None:
    doc.h(1, "All runs")
    rows = []
    for run in runs:
        error = (run.error or "").strip().splitlines()
        rows.append([run.name, run.run_id, run.status, run.method, run.dataset, run.sweep_id or "-",
                     run.tags.get("sweep.axes", "-"), error[-1][:160] if error else ""])
    doc.blocks.append(Table(["run", "run id", "status", "method", "dataset", "sweep", "axes", "error"], rows))
    doc.h(1, "ROC curves and score timelines")
    doc.p("The plots are embedded in leaderboard.html; missing artifacts are listed per run.")
    for run in runs:
        if run.status != "FINISHED":
            continue
        doc.h(2, f"{run.name} ({run.run_id})")
        for block in run_artifact_blocks(run, images=images):
            doc.blocks.append(block)


def run_artifact_blocks(run: RunRecord, *, images: bool = True) -> list:
    """Images of ``plots/`` per test set, and a 'missing' line for each expected artifact that is not there."""
    folder = run.artifact_dir
    if folder is None:
        return [("p", "artifacts are not in a local folder (remote artifact store): not embedded")]
    expected = ["config.yaml", "metrics.json", *[f"scores/{t}.npz" for t in run.test_sets]]
    blocks: list = [Image(f"artifact {name} of run {run.run_id}", None)
                    for name in expected if not (folder / name).is_file()]
    plots = sorted((folder / "plots").rglob("*.png")) if (folder / "plots").is_dir() else []
    for test_set in run.test_sets:
        mine = [p for p in plots if test_set in p.relative_to(folder / "plots").parts[:-1] or test_set in p.stem]
        for kind, words in (("ROC curve", ("roc", "curve")), ("score timeline", ("timeline",))):
            found = [p for p in mine if any(w in p.name.lower() for w in words)]
            if not found:
                blocks.append(Image(f"{kind} of {test_set} (no plots/…{test_set}…{words[0]}*.png artifact)", None))
            for path in found if images else []:
                blocks.append(Image(f"{kind}, {test_set}: {path.relative_to(folder).as_posix()}", _read(path)))
    return blocks


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
