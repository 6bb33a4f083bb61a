"""How evenly a DDP test pass is dealt: the slowest rank's windows against the mean, on the real test sets.

    .venv/bin/python benchmarks/ddp_balance.py

Each test video is read whole by one reader (DDP rank x DataLoader worker) and costs one model call per window, so
the pass lasts as long as its most loaded rank. This prints, for UCF-Crime (290 test videos in ``Anomaly_Test.txt``
order, the reader's) and XD-Violence (800, in the reader's sorted order) at 2/4/8 ranks x 4 workers, the slowest
rank's windows, the mean and their ratio, for the former round-robin dealing and the longest-first one
(``copra_bench.datamodules.sharding``). Frame counts are the full-size lengths of the shipped VERA files
(``UCF_Eval.json``, ``xd_test_800.json``), windows at the default stride 16. A count: the same on every machine.
"""

from __future__ import annotations

import json

from copra_bench.datamodules.annotations import ANNOTATIONS_DIR
from copra_bench.datamodules.sharding import (
    deal_round_robin,
    deal_videos,
    imbalance,
    rank_loads,
)

from copra_bench.windows import num_windows

STRIDE = 16  # both datasets' default window_stride (configs/data/ucf_crime.yaml, xd_violence.yaml)
WORKERS = 4


def _lengths(path: str) -> dict[str, int]:
    entries = json.loads((ANNOTATIONS_DIR / path).read_text())
    return {e["video"].rsplit("/", 1)[-1].removesuffix(".mp4"): int(e["length"]) for e in entries}


def real_window_counts() -> dict[str, list[int]]:
    """Windows per test video, in the order the real readers list them."""
    ucf = _lengths("ucf_crime/UCF_Eval.json")
    listed = (ANNOTATIONS_DIR / "ucf_crime" / "Anomaly_Test.txt").read_text().split()
    ucf_order = [line.rsplit("/", 1)[-1].removesuffix(".mp4") for line in listed]
    xd = _lengths("xd_violence/xd_test_800.json")
    return {"UCF-Crime": [num_windows(ucf[n], stride=STRIDE) for n in ucf_order],
            "XD-Violence": [num_windows(xd[n], stride=STRIDE) for n in sorted(xd)]}


def main() -> None:
    print("| Test set | ranks x workers | dealing | slowest rank (windows) | mean (windows) | slowest / mean |")
    print("|---|---|---|---:|---:|---:|")
    for name, counts in real_window_counts().items():
        for ranks in (2, 4, 8):
            for label, dealing in (
                    ("round-robin", deal_round_robin(num_videos=len(counts), world_size=ranks, num_workers=WORKERS)),
                    ("longest-first", deal_videos(window_counts=counts, world_size=ranks, num_workers=WORKERS))):
                loads = rank_loads(dealing, counts)
                print(f"| {name} | {ranks} x {WORKERS} | {label} | {max(loads):,} | {sum(loads) / ranks:,.0f} | "
                      f"{imbalance(loads):.3f} |")


if __name__ == "__main__":
    main()
