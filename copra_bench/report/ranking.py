"""Which value of a leaderboard column is the best, and when the best is only a tie.

A column compares rows (method x variant). The row with the highest mean (the lowest for FAR-like metrics) is the
candidate. Each row carries an interval: the run's 95 % bootstrap interval when it logged one (AUC, AP), else
mean ± std over seeds when there are several, else none. Rows whose interval overlaps the candidate's are
statistically indistinguishable from it: then the candidate and every overlapping row are marked ``tied`` and nobody
wins. Without intervals two rows tie only when their values are equal to the shown precision.
"""

from __future__ import annotations

from dataclasses import dataclass

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
