"""The leaderboard's transfer section: ``python -m copra_bench transfer`` runs, per task, beside the paper's numbers.

A transfer run is tagged ``subcommand=transfer`` and logs ``transfer/<task>/<variant>/<group path>/<metric>``
(:mod:`copra_bench.transfer.record`). Rows are (method, variant, trained from); cells are mean ± sample std over the
runs that share them (n = runs: several training seeds of the method). The paper's transfer numbers (COPRA paper,
arXiv 2605.15325; VRU-Accident, trained on UCF-Crime only) are shown under the real task's table, always labelled
as reported; the embedded synthetic tasks have no paper counterpart.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from copra_bench.report.document import Document, Table
from copra_bench.report.paper import PAPER
from copra_bench.report.runs import RunRecord

__all__ = ["PAPER_TRANSFER", "is_transfer", "transfer"]

#: task -> method -> metric -> value, as the paper reports them (accuracy in %, caption metrics in [0, 1]).
PAPER_TRANSFER: dict[str, dict[str, dict[str, float]]] = {
    "vru_accident_vqa": {"frozen": {"overall/accuracy": 49.05}, "copra": {"overall/accuracy": 50.40}},
    "vru_accident_caption": {
        "frozen": {"overall/spice": 0.139, "overall/meteor": 0.249, "overall/comet": 0.694,
                   "overall/rouge_l_f1": 0.208},
        "copra": {"overall/spice": 0.149, "overall/meteor": 0.273, "overall/comet": 0.701,
                  "overall/rouge_l_f1": 0.212},
    },
}
_MC_COLUMNS = ("overall/accuracy", "overall/accuracy_micro", "overall/no_answer")
_CAPTION_COLUMNS = ("overall/rouge_l_f1", "overall/meteor", "overall/bleu_4", "overall/cider", "overall/spice",
                    "overall/comet")
_TIME = "timing/seconds_per_100_docs"


def is_transfer(run: RunRecord) -> bool:
    return run.tags.get("subcommand") == "transfer"


def _metrics(tracking_uri: str, runs: list[RunRecord]) -> dict[str, dict[str, float]]:
    """run id -> its ``transfer/...`` metrics (RunRecord keeps only the test metrics)."""
    from copra_bench.store_uri import (
        tracking_client,  # mlflow is slow to import: only here
    )

    client = tracking_client(tracking_uri)
    return {r.run_id: {k: float(v) for k, v in client.get_run(r.run_id).data.metrics.items()
                       if k.startswith("transfer/")} for r in runs}


def _cell(values: list[float], digits: int) -> str:
    if not values:
        return "unavailable"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def transfer(doc: Document, tracking_uri: str, runs: list[RunRecord]) -> None:
    """Append the transfer section (nothing when there are no finished transfer runs)."""
    finished = [r for r in runs if is_transfer(r) and r.status == "FINISHED"]
    if not finished:
        return
    metrics = _metrics(tracking_uri, finished)
    doc.h(1, f"Transfer tasks ({len(finished)} runs)")
    doc.p("Zero-shot transfer: a method trained for anomaly detection answers another task's questions (multiple-"
          "choice accuracy in %) or writes its captions. 'adapted' is the method as trained (COPRA: a LoRA generated "
          "from each document's frames; static methods: their trained adapter; frozen: the frozen VLM), "
          "'unadapted' the same backbone with the adaptation off (runs with --compare_unadapted). Mean ± std over "
          "the runs in a row (n); 'unavailable': the metric could not run (its data is not installed), never 0.")
    by_task: dict[str, list[RunRecord]] = defaultdict(list)
    for run in finished:
        by_task[run.tags.get("transfer.task", "?")].append(run)
    for task, members in sorted(by_task.items()):
        kind = members[0].params.get("transfer.kind", "caption")
        columns = _MC_COLUMNS if kind == "multiple_choice" else _CAPTION_COLUMNS
        rows_of: dict[tuple[str, str, str], list[RunRecord]] = defaultdict(list)
        for run in members:
            variants = sorted({k.split("/")[2] for k in metrics[run.run_id] if k.startswith(f"transfer/{task}/")})
            for variant in variants:
                rows_of[(run.method, variant, run.params.get("train.data", "").rsplit(".", 1)[-1] or "-")].append(run)
        rows, classes = [], []
        for (method, variant, trained), group in sorted(rows_of.items()):
            values = [[metrics[r.run_id][k] for r in group if k in metrics[r.run_id]]
                      for k in (f"transfer/{task}/{variant}/{c}" for c in (*columns, _TIME))]
            digits = [2 if kind == "multiple_choice" else 3] * len(columns) + [1]
            rows.append([method, variant, trained, str(len(group)), *[_cell(v, d) for v, d in zip(values, digits)]])
            classes.append("")
        for method, reported in PAPER_TRANSFER.get(task, {}).items():
            rows.append([method, "adapted" if method != "frozen" else "-", "UCF-Crime", "paper",
                         *[f"{reported[c]:g} (paper)" if c in reported else "" for c in columns], ""])
            classes.append("paper")
        protocol = members[0].params
        doc.h(2, f"Transfer: {task}")
        doc.p(f"Protocol: {protocol.get('transfer.num_frames', '?')} frames ({protocol.get('transfer.frame_sampling', '?')}),"
              f" greedy, {protocol.get('transfer.max_new_tokens', '?')} new tokens; source: "
              f"{protocol.get('transfer.protocol_source', '?')}." + (
                  f" Italic rows: {PAPER.split(',')[0]}, reported, not measured here." if task in PAPER_TRANSFER
                  else ""))
        doc.blocks.append(Table(["method", "variant", "trained on", "n", *[c.removeprefix("overall/") for c in columns],
                                 "s / 100 docs"], rows, row_classes=classes, wrap=(2,)))
        notes = sorted({(k, v) for r in members for k, v in r.params.items()
                        if k.startswith(("transfer.implementation.", "transfer.unavailable."))})
        if notes:
            doc.blocks.append(("details", f"metric implementations of {task}", [("kv", notes)]))
