"""Which value of a leaderboard column is the best, and when the best is only a tie.

A column compares rows (method x variant). The row with the highest mean (the lowest for FAR-like metrics) is the
candidate. Each row carries an interval: the run's 95 % bootstrap interval when it logged one (AUC, AP), else
mean ± std over seeds when there are several, else none. Rows whose interval overlaps the candidate's are
statistically indistinguishable from it: then the candidate and every overlapping row are marked ``tied`` and nobody
wins. Without intervals two rows tie only when their values are equal to the shown precision.

:func:`entry_of` reads a column entry from runs, :func:`marked_cells` turns a grid of them into marked table cells.
"""

from __future__ import annotations

from dataclasses import dataclass

from copra_bench.report import aggregate as agg
from copra_bench.report.document import Cell
from copra_bench.report.runs import RunRecord

CI_BOUNDS = {"auc": ("auc_ci_low", "auc_ci_high"), "ap": ("ap_ci_low", "ap_ci_high")}
#: Metrics where a lower value is better (false-alarm rate).
LOWER_IS_BETTER = ("far",)
BEST, TIED = "best", "tied"
LEGEND = ("★ (bold): best value of the column, and its 95 % bootstrap interval (AUC, AP) or mean ± std over seeds "
          "(other metrics, when there are several seeds) overlaps no other row's. ≈: tied for best: the row's "
          "interval overlaps the interval of the highest value (that row included), so no single winner is "
          "marked. Higher is better except for FAR. A column with one row marks nothing.")


@dataclass(frozen=True)
class Entry:
    """One row's value in a column (a fraction, e.g. 0.84) and its interval (None where there is none)."""

    mean: float | None
    low: float | None = None
    high: float | None = None


def lower_is_better(metric: str) -> bool:
    return metric.split("/")[0] in LOWER_IS_BETTER


def _overlap(a: Entry, b: Entry) -> bool:
    if None not in (a.low, a.high, b.low, b.high):
        return a.low <= b.high and b.low <= a.high
    return round(a.mean, 4) == round(b.mean, 4)  # 2 decimals of a percentage: what the table shows


def column_marks(entries: list[Entry], metric: str) -> list[str]:
    """``"best"``, ``"tied"`` or ``""`` for each entry of one column (see the module docstring for the rule)."""
    marks = [""] * len(entries)
    valued = [i for i, e in enumerate(entries) if e.mean is not None]
    if len(valued) < 2:
        return marks
    sign = -1.0 if lower_is_better(metric) else 1.0
    top = max(valued, key=lambda i: sign * entries[i].mean)
    tied = [i for i in valued if i != top and _overlap(entries[i], entries[top])]
    for i in [top, *tied] if tied else []:
        marks[i] = TIED
    if not tied:
        marks[top] = BEST
    return marks


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


def entry_of(runs: list[RunRecord], test_set: str, step: str, metric: str) -> tuple[Entry, agg.Stat, str]:
    """The column entry (value and its interval), the stat and the interval text."""
    stat = agg.stat_of(runs, test_set, step, metric)
    if stat.mean is None:
        return Entry(None), stat, ""
    if metric in CI_BOUNDS:
        low = agg.stat_of(runs, test_set, step, CI_BOUNDS[metric][0]).mean
        high = agg.stat_of(runs, test_set, step, CI_BOUNDS[metric][1]).mean
        if low is not None and high is not None:
            return Entry(stat.mean, low, high), stat, f"[{100 * low:.1f}, {100 * high:.1f}]"
    if stat.std is not None:
        return Entry(stat.mean, stat.mean - stat.std, stat.mean + stat.std), stat, ""
    return Entry(stat.mean), stat, ""


def marked_cells(entries: list[list[tuple[Entry, agg.Stat, str]]], metrics: list[str]) -> list[list[Cell]]:
    """Table cells from a grid of :func:`entry_of` results (rows x columns; ``metrics``: each column's metric),
    with the best / tied marks of each column."""
    marks = [column_marks([row[c][0] for row in entries], metric) for c, metric in enumerate(metrics)]
    return [[Cell(fmt(stat, metrics[c]), interval, marks[c][r]) for c, (_, stat, interval) in enumerate(row)]
            for r, row in enumerate(entries)]
