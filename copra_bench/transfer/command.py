"""``python -m copra_bench transfer``: a VAD-trained method on a transfer benchmark, and the benchmark's doctor.

::

    python -m copra_bench transfer --config configs/transfer/vru_accident_vqa.yaml --ckpt_path <run dir | .ckpt | id>
    python -m copra_bench transfer --config configs/transfer/vru_accident_caption.yaml \\
        --model configs/model/frozen_qwen2vl_7b.yaml
    python -m copra_bench transfer inspect --config configs/transfer/hivau_caption.yaml   # the doctor

The config names the task (``task: {class_path, init_args}``) and the run settings (``batch_size``, ``frame_size``,
``repetition_penalty``, ``tracking``); the command line overrides them. Results go to
``<local_dir>/transfer/<run>/`` first (``metrics.json``, ``predictions/<variant>.json``, the official-format
prediction files, ``faults.json``), then to MLflow (:mod:`copra_bench.transfer.record`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

import yaml

from .task import TransferError, TransferTask

__all__ = ["build_task", "read_config", "transfer_command"]


def read_config(path: str) -> dict[str, Any]:
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise TransferError(f"cannot read the transfer config {path}: {err}") from None
    if not isinstance(config, dict) or not isinstance(config.get("task"), dict):
        raise TransferError(f"{path}: a transfer config needs task: {{class_path: ..., init_args: {{...}}}}")
    return config


def build_task(config: dict[str, Any], *, root: str | None = None, where: str = "config") -> TransferTask:
    """The task of a config's ``task`` section (``root`` replaces ``init_args.root``)."""
    section = config["task"]
    class_path = str(section.get("class_path", ""))
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise TransferError(f"{where}: cannot import task {class_path!r}: {err}") from None
    if not (isinstance(cls, type) and issubclass(cls, TransferTask)):
        raise TransferError(f"{where}: {class_path} is not a TransferTask")
    init_args = dict(section.get("init_args") or {})
    if root is not None:
        init_args["root"] = root
    try:
        return cls(**init_args)
    except TypeError as err:
        raise TransferError(f"{where}: {class_path}: {err}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m copra_bench transfer", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", nargs="?", choices=("run", "inspect"), default="run",
                        help="run (default) or inspect: the doctor (documents per group and every fault)")
    parser.add_argument("--config", required=True, help="configs/transfer/<task>.yaml")
    parser.add_argument("--ckpt_path", help="trained method: run directory, .ckpt file or MLflow run id")
    parser.add_argument("--model", help="model config (configs/model/<method>.yaml); default: the run's own")
    parser.add_argument("--root", help="dataset folder (replaces task.init_args.root)")
    parser.add_argument("--compare_unadapted", action="store_true",
                        help="also answer without the adaptation (same backbone, frames and prompts)")
    parser.add_argument("--batch_size", type=int, help="documents per generate call (default: config, else 8)")
    parser.add_argument("--frame_size", type=int, help="shorter side of the frames (default: native)")
    parser.add_argument("--limit", type=int, help="only the first N documents (a quick check)")
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--allow_untrained", action="store_true", help="run a trained method without a checkpoint")
    parser.add_argument("--tracking_uri", help="MLflow store (default: config tracking.tracking_uri, else "
                                               "sqlite:///mlflow.db)")
    parser.add_argument("--experiment", help="MLflow experiment (default: config, else copra_bench)")
    parser.add_argument("--local_dir", help="run folders (default: config tracking.local_dir, else outputs)")
    parser.add_argument("--no_mlflow", action="store_true", help="write the run folder only")
    parser.add_argument("--seed", type=int, default=0, help="torch seed (greedy decoding does not sample)")
    return parser


def inspect_task(task: TransferTask) -> int:
    """The doctor: documents per group key and every fault; exit status 1 when there are faults."""
    data = task.load()
    print(f"{task.name}: {len(data.documents)} documents ({task.kind}; protocol: {task.num_frames} frames "
          f"({task.sampling}), {task.max_new_tokens} new tokens, greedy; {task.protocol_source})")
    for key in task.group_keys:
        counts: dict[str, int] = {}
        for doc in data.documents:
            counts[doc.groups.get(key, "")] = counts.get(doc.groups.get(key, ""), 0) + 1
        print(f"  by {key}: " + ", ".join(f"{v} {n}" for v, n in sorted(counts.items())))
    videos = {d.video for d in data.documents}
    spans = sum(1 for d in data.documents if d.span is not None)
    print(f"  {len(videos)} videos on disk" + (f", {spans} documents on a span of their video" if spans else ""))
    if not data.faults:
        print("no faults")
        return 0
    print(f"{len(data.faults)} faults: " + ", ".join(f"{n} {k}" for k, n in sorted(data.fault_counts().items())))
    for fault in data.faults:
        print(f"  [{fault.kind}] {fault.where}: {fault.detail}")
    return 1


def transfer_command(argv: list[str]) -> int:
    """Entry of ``python -m copra_bench transfer`` (errors are reported by the CLI's ``main``)."""
    args = _parser().parse_args(argv)
    config = read_config(args.config)
    task = build_task(config, root=args.root, where=args.config)
    if args.action == "inspect":
        return inspect_task(task)
    from .record import execute

    return execute(task, config, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(transfer_command(sys.argv[1:]))

