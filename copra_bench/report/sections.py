"""Sections of the report after the leaderboards: cross-domain matrices, sweep axes, the paper comparison, the runs
left out of the tables, the list of runs and their plots."""

from __future__ import annotations

from pathlib import Path

from copra_bench.report import aggregate as agg
from copra_bench.report.document import Cell, Document, Image, Table
from copra_bench.report.paper import PAPER, PAPER_ROWS, matching_rows
from copra_bench.report.ranking import entry_of, fmt, marked_cells
from copra_bench.report.runs import RunRecord

def matrix(doc: Document, runs: list[RunRecord]) -> None:
    """Per primary metric and first/last step: one small trained-on x tested-on heatmap per method variant, side
    by side in the HTML. Headings are short; what they mean is said once in the paragraph under them."""
    trained = sorted({r.train_dataset for r in runs})
    tested = sorted({t for r in runs for t in r.test_sets})
    if len(trained) < 2 and len(tested) < 2:
        return
    variants = agg.variants(runs, ignore_data=True)
    doc.h(2, "Cross-domain matrix")
    doc.p("Per metric and step: every method (variant) in one table, a column per (trained on → tested on) pair "
          "with the mean over seeds, best / tied marked per column by the intervals as in the leaderboards; then, "
          "collapsed, one matrix per method: rows are the data it was trained on, columns the test sets, the "
          "colour from the matrix's lowest value (light) to its highest (dark). Cells are mean ± std over seeds.")
    for metric in agg.PRIMARY_METRICS:
        for step in sorted({s for v in variants for s in (agg.steps_of(v.runs)[:1] + agg.steps_of(v.runs)[-1:])}):
            tables = []
            for variant in variants:
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
                note = variant.full_label if variant.full_label != variant.label else ""
                tables.append(Table(["trained \\ tested", *tested], rows, heat=heat, note=note,
                                    title=f"{variant.name}: {metric.upper()} %, {step}"))
            if tables:
                doc.h(3, f"{metric.upper()} %, {step}")
                _overview(doc, variants, trained, tested, metric, step)
                doc.blocks.append(("details", f"one matrix per method ({len(tables)})", [("grid", tables)]))


def _short_names(names: list[str]) -> dict[str, str]:
    """Data set names without their common prefix (``synth_ucf_A`` -> ``A``) for column headings."""
    prefix = ""
    for chars in zip(*names, strict=False):
        if len(set(chars)) > 1:
            break
        prefix += chars[0]
    return {n: n[len(prefix):] or n for n in names} if len(names) > 1 else {n: n for n in names}


def _overview(doc: Document, variants: list[agg.Variant], trained: list[str], tested: list[str], metric: str,
              step: str) -> None:
    """Every method (variant) in one table: a column per (trained on, tested on) cell, the best marked."""
    pairs = [(s, t) for s in trained for t in tested
             if any(r.train_dataset == s and t in r.test_sets for v in variants for r in v.runs)]
    names = _short_names(sorted(set(trained) | set(tested)))
    entries = [[entry_of([r for r in v.runs if r.train_dataset == s], t, step, metric) for s, t in pairs]
               for v in variants]
    cells = [[Cell(f"{100 * e.mean:.2f}" if e.mean is not None else "-", "", c.mark) for (e, _, _), c in
              zip(row, marked, strict=True)] for row, marked in zip(entries, marked_cells(entries, [metric] * len(pairs)),
                                                                    strict=True)]
    doc.blocks.append(Table(["method", *[f"{names[s]} → {names[t]}" for s, t in pairs]],
                            [[v.name, *row] for v, row in zip(variants, cells, strict=True)], wrap=(0,)))


def axes(doc: Document, groups: list[agg.ProtocolGroup]) -> None:
    """One table per sweep axis. A row is (axis value, protocol group): an axis that changes a protocol param
    (e.g. the conditioning unit) still gets one table, but runs of different groups are never averaged."""
    group_of = {r.run_id: g for g in groups for r in g.runs}
    runs = [r for g in groups for r in g.runs]
    for sweep_id, by_axis in sorted(agg.axis_marginals(runs).items()):
        doc.h(1, f"Sweep {sweep_id}: one table per axis")
        for axis, by_value in by_axis.items():
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


def paper_comparison(doc: Document, groups: list[tuple[agg.ProtocolGroup, list[agg.Variant]]]) -> None:
    """Our numbers beside the paper's where a variant matches a paper row (method, backbone, train and test
    data); the paper's full list stays below, collapsed, always labelled as reported numbers."""
    doc.h(1, "Compared with the paper")
    rows, classes = [], []
    for group, variants in groups:
        for variant in variants:
            backbone = variant.runs[0].params.get("model.init_args.backbone", "")
            for test_set in sorted({t for r in variant.runs for t in r.test_sets}):
                members = [r for r in variant.runs if test_set in r.test_sets]
                for row in matching_rows(variant.method, backbone, variant.train_dataset, test_set):
                    steps = agg.steps_of(members, test_set)[:3]
                    ours = [fmt(agg.stat_of(members, test_set, s, row.metric), row.metric) for s in steps]
                    head = [variant.name, row.backbone, f"{variant.train_dataset} → {test_set}", row.metric.upper()]
                    rows.append([*head, "this benchmark", *ours, *[""] * (3 - len(ours))])
                    rows.append([*head, f"paper (reported){' ' + row.note if row.note else ''}",
                                 *[f"{v:.2f} (paper)" for v in row.steps]])
                    classes += ["", "paper"]
    if rows:
        doc.p(f"Italic rows are numbers from the {PAPER.split(',')[0]}: reported there, not measured here. They "
              "are shown only where a run's method, backbone and train/test data match a paper row.")
        doc.blocks.append(Table(["method", "backbone", "data", "metric", "source", "step1", "step2", "step3"],
                                rows, row_classes=classes, wrap=(0, 2, 4)))
    else:
        doc.p("No run matches a row of the paper's tables (same method, backbone checkpoint and train/test data), "
              "so nothing is put side by side.")
    doc.blocks.append(("details", f"all numbers reported by the paper ({len(PAPER_ROWS)} rows, not reproduced "
                                  "here)", [Table(["backbone", "data", "method", "metric", "step1", "step2", "step3",
                                                   "note"], [[r.backbone, r.dataset, r.method, r.metric,
                                                              *[f"{v:.2f}" for v in r.steps], r.note]
                                                             for r in PAPER_ROWS],
                                                  row_classes=["paper"] * len(PAPER_ROWS),
                                                  note=f"{PAPER}. UCF-Crime: frame AUC %; XD-Violence: AP %.")]))


def not_in_tables(doc: Document, excluded: list[RunRecord]) -> None:
    if not excluded:
        return
    doc.h(1, f"Not in the tables ({len(excluded)} runs)")
    doc.p("These runs are not evaluations the tables can compare; each is listed once here with the reason.")
    doc.blocks.append(Table(["run", "run id", "status", "method", "reason"],
                            [[r.name, r.run_id, r.status, r.method, r.exclusion] for r in excluded], wrap=(0, 4)))


def runs_and_artifacts(doc: Document, runs: list[RunRecord], *, images: bool) -> None:
    doc.h(1, "Runs in the tables")
    doc.blocks.append(Table(["run", "run id", "method", "dataset", "seed", "sweep", "axes"],
                            [[r.name, r.run_id, r.method, r.dataset, r.params.get("seed_everything", "-"),
                              r.sweep_id or "-", r.tags.get("sweep.axes", "-")] for r in runs], wrap=(0, 6)))
    doc.h(1, "ROC curves and score timelines")
    doc.p("The plots are embedded in leaderboard.html; missing artifacts are listed per run.")
    for run in runs:
        doc.h(2, f"{run.name} ({run.run_id})")
        doc.blocks.extend(run_artifact_blocks(run, images=images))


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
