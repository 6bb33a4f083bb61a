"""Transfer figures on the embedded default: frozen vs COPRA vs static LoRA + GRPO on the synthetic MC-VQA and
captioning sets (docs/benchmarks.md, section "Transfer tasks").

    nice -n 10 .venv/bin/python benchmarks/transfer_figures.py \\
        --ckpt copra=outputs/1/<run>/checkpoints/last.ckpt --ckpt copra=... \\
        --ckpt lora_grpo=outputs/1/<run>/checkpoints/last.ckpt ... --out /tmp/transfer_figures.json

Each checkpoint is one trained seed (``fit --config configs/cross_domain.yaml [--model
configs/model/lora_grpo_tiny.yaml] --seed_everything <s>``); the frozen model runs once (greedy decoding is
deterministic). Tasks: ``synthetic_vqa`` with the official protocol (generate 10 tokens, parse the letter),
``synthetic_vqa`` scored by letter likelihood (``answer_mode: letter_logits``), ``synthetic_caption`` (official prompt,
200 tokens, ROUGE-L F1, pycocoevalcap set). Prints one Markdown table per task: mean ± std over seeds and seconds per
100 documents (generation only, frames decoded once and excluded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from copra_bench.transfer.methods import load_method
from copra_bench.transfer.runner import run_task
from copra_bench.transfer.synthetic import (
    SyntheticVRUAccidentCaption,
    SyntheticVRUAccidentVQA,
)

ROOT = Path(__file__).resolve().parents[1]
TASKS = {
    "synthetic_vqa (official: generate + parse)": lambda: SyntheticVRUAccidentVQA(),
    "synthetic_vqa (letter likelihood)": lambda: SyntheticVRUAccidentVQA(answer_mode="letter_logits"),
    "synthetic_caption (official)": lambda: SyntheticVRUAccidentCaption(metrics={"nltk_meteor": False}),
}
COLUMNS = {"multiple_choice": ("overall/accuracy", "overall/accuracy_micro", "overall/no_answer",
                               "category/event_type/accuracy", "category/location/accuracy",
                               "category/lighting/accuracy", "category/event_time/accuracy"),
           "caption": ("overall/rouge_l_f1", "overall/meteor", "overall/bleu_4", "overall/cider")}


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{statistics.fmean(values):.3g} ± {statistics.stdev(values):.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", action="append", default=[], help="method=checkpoint, once per trained seed")
    parser.add_argument("--out", default="/tmp/transfer_figures.json")
    parser.add_argument("--add", action="store_true", help="add to the records already in --out (no frozen run)")
    parser.add_argument("--tasks", nargs="*", choices=range(len(TASKS)), type=int, default=list(range(len(TASKS))),
                        help="which tasks (0 official VQA, 1 letter-likelihood VQA, 2 captions); a timing pass: 0 2")
    parser.add_argument("--repeat", type=int, default=1, help="run each method this many times, interleaved")
    args = parser.parse_args()
    tasks = {label: make for i, (label, make) in enumerate(TASKS.items()) if i in args.tasks}
    methods = ([] if args.add else [("frozen", None)]) + [tuple(item.split("=", 1)) for item in args.ckpt]
    records = json.loads(Path(args.out).read_text()) if args.add else []
    for name, ckpt in [m for _ in range(args.repeat) for m in methods]:
        started = time.perf_counter()
        if ckpt is None:
            method = load_method(model=str(ROOT / "configs/model/frozen_tiny.yaml"))
        else:
            model = ROOT / "configs/model" / ("copra_tiny.yaml" if name == "copra" else "lora_grpo_tiny.yaml")
            method = load_method(model=str(model), ckpt_path=ckpt)
        for label, make in tasks.items():
            task = make()
            outcome = run_task(task, method, batch_size=8)
            result = outcome.variants["adapted"]
            records.append({"method": name, "ckpt": ckpt, "task": label, "kind": task.kind,
                            "metrics": result.metrics, "seconds_per_100_docs": result.seconds_per_100_docs,
                            "documents": len(result.results)})
            print(f"{name} {label}: {len(result.results)} docs, {result.seconds_per_100_docs:.1f} s / 100 docs",
                  flush=True)
        print(f"{name} ({ckpt}): {time.perf_counter() - started:.0f} s", flush=True)
    Path(args.out).write_text(json.dumps(records, indent=1))
    for label in tasks:
        rows = [r for r in records if r["task"] == label]
        columns = COLUMNS[rows[0]["kind"]]
        print(f"\n#### {label}, {rows[0]['documents']} documents\n")
        print("| method | n | " + " | ".join(c.replace("overall/", "") for c in columns) + " | s / 100 docs |")
        print("|---" * (len(columns) + 3) + "|")
        for name in dict.fromkeys(r["method"] for r in rows):
            mine = [r for r in rows if r["method"] == name]
            cells = [_cell([r["metrics"][c] for r in mine if c in r["metrics"]]) for c in columns]
            print(f"| {name} | {len(mine)} | " + " | ".join(cells) + f" | {_cell([r['seconds_per_100_docs'] for r in mine])} |")


if __name__ == "__main__":
    main()
