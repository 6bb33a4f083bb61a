"""The report's layout rules on synthetic run records (no MLflow, no model): best / tied marks, per-method variant
labels, short headings and aligned Markdown at 10 methods x 9 cross-domain cells."""

from __future__ import annotations

import random

from copra_bench.report.build import build_document
from copra_bench.report.document import MAX_MD_CELL, to_html, to_markdown
from copra_bench.report.ranking import Entry, column_marks
from copra_bench.report.runs import RunRecord

PROTOCOL = {"protocol.gt_end_inclusive": "False", "protocol.postprocess": "vera_code"}
DOMAINS = ("synth_ucf_A", "synth_ucf_B", "synth_ucf_C")


def _record(method: str, train: str, seed: int, results: dict, params: dict | None = None) -> RunRecord:
    base = {"model.class_path": f"copra_bench.methods.{method}", "seed_everything": str(seed),
            "data.name": f"{train}_to_x", "data.init_args.source.init_args.domain": train[-1],
            "model.init_args.lr": "0.003", f"model.init_args.{method}_only": "1", **PROTOCOL, **(params or {})}
    return RunRecord(run_id=f"{method}-{train}-{seed}-{len(params or {})}", name=f"{method}-{train}-{seed}",
                     status="FINISHED", params=base, tags={"method": method, "dataset": f"{train}_to_x",
                                                           "subcommand": "fit"}, results=results)


def test_marks_best_only_when_no_interval_overlaps_it():
    assert column_marks([Entry(0.9, 0.85, 0.95), Entry(0.7, 0.6, 0.8), Entry(0.6)], "auc") == ["best", "", ""]
    assert column_marks([Entry(0.9, 0.8, 0.95), Entry(0.7, 0.6, 0.82), Entry(0.6, 0.5, 0.7)], "auc") == \
        ["tied", "tied", ""]
    assert column_marks([Entry(0.1), Entry(0.3), Entry(None)], "far") == ["best", "", ""]  # FAR: lower is better
    assert column_marks([Entry(0.5), Entry(0.5)], "auc") == ["tied", "tied"]
    assert column_marks([Entry(0.5)], "auc") == [""]


def test_ten_methods_nine_cross_domain_cells_stay_readable():
    rng = random.Random(3)
    methods = [f"method{i}" for i in range(10)]
    runs, truth = [], {}
    for method in methods:
        for train in DOMAINS:
            for seed in (0, 1):
                results = {}
                for test in DOMAINS:
                    for step in ("step1", "step3"):
                        auc = rng.uniform(0.4, 0.95)
                        results |= {(test, step, "auc"): auc, (test, step, "auc_ci_low"): auc - 0.01,
                                    (test, step, "auc_ci_high"): auc + 0.01, (test, step, "ap"): auc - 0.1}
                        truth.setdefault((method, train, test, step), []).append(auc)
                runs.append(_record(method, train, seed, results))
    # a second variant of method0 (rank 8): only rank differs, so only rank names it
    runs.append(_record("method0", "synth_ucf_A", 0, {(t, s, m): 0.5 for t in DOMAINS for s in ("step1", "step3")
                                                      for m in ("auc", "ap")}, {"model.init_args.rank": "8"}))
    doc = build_document("ten", "sqlite:///x.db", runs, images=False)
    markdown, page = to_markdown(doc), to_html(doc)

    headings = [b[2] for b in doc.blocks if isinstance(b, tuple) and b[0] == "h"]
    assert "Cross-domain matrix" in headings and "AUC %, step1" in headings
    assert max(len(h) for h in headings) <= 60, max(headings, key=len)
    grids = [inner for b in doc.blocks if isinstance(b, tuple) and b[0] == "details" for inner in b[2]
             if isinstance(inner, tuple) and inner[0] == "grid"]
    titles = [t.title for grid in grids for t in grid[1]]
    assert len(titles) == 2 * 2 * 11 and max(len(t) for t in titles) <= 40  # (AUC, AP) x 2 steps x 11 variants
    assert {"method0 rank=8: AUC %, step1", "method0 rank=-: AUC %, step1", "method1: AUC %, step1"} <= set(titles)
    assert page.count('class="grid"') == 4

    overview = markdown.split("#### AUC %, step3")[1].split("\n\n")[1].splitlines()
    headers = [h.strip() for h in overview[0].split("|")[1:-1]]
    assert headers[:4] == ["method", "A → A", "A → B", "A → C"] and len(headers) == 10
    for c, (train, test) in enumerate(((s, t) for s in DOMAINS for t in DOMAINS), start=1):
        means = {m: sum(truth[(m, train, test, "step3")]) / 2 for m in methods}
        top = max(methods, key=means.get)
        tied = {m for m in methods if m != top and abs(means[m] - means[top]) <= 0.02}  # intervals are mean ± 0.01
        marks = {line.split("|")[1].split()[0]: line.split("|")[c + 1] for line in overview[2:]
                 if "rank=8" not in line}  # the rank-8 variant (0.5 everywhere) never competes for best
        assert {m for m in methods if "★" in marks[m]} == (set() if tied else {top}), (train, test)
        assert {m for m in methods if "≈" in marks[m]} == (tied | {top} if tied else set()), (train, test)
        assert f"**{100 * means[top]:.2f}**" in marks[top] or tied

    table = markdown.split("**method3: AUC %, step3**")[1].split("\n\n")[1].splitlines()
    for train, line in zip(DOMAINS, table[2:], strict=True):
        expected = [sum(truth[("method3", train, t, "step3")]) / 2 for t in DOMAINS]
        assert line.split("|")[1].strip() == train
        assert [float(c.split("±")[0]) for c in line.split("|")[2:-1]] == \
            [round(100 * v, 2) for v in expected]

    board = markdown.split("### Leaderboard: tested on synth_ucf_B")[1].split("\n\n")[1].splitlines()
    assert len({len(line) for line in board}) == 1, "Markdown table columns must be padded to one width"
    cells = [c.strip() for line in markdown.splitlines() if line.startswith("|") for c in line.split("|")[1:-1]]
    assert max(len(c) for c in cells) <= MAX_MD_CELL
    variants = {line.split("|")[2].strip() for line in board[2:]}
    assert variants == {"-", "rank=-", "rank=8"}, "a variant is named by what differs within its method only"
    assert "method0_only" not in board[2] and "lr=" not in "".join(board)
