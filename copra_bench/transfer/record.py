"""Running a transfer job and recording it: the run folder first, then MLflow (as every run of the project).

MLflow run: tags ``subcommand=transfer``, ``method``, ``transfer.task``, ``ckpt_path``, ``run_dir``; params
``transfer.*`` (the task's protocol, the metric implementations, the unavailable metrics and why), ``model.*`` (the
method's model config), ``train.*`` (the trained run's seed and data, when known); metrics
``transfer/<task>/<variant>/<group path>/<metric>`` (e.g. ``transfer/vru_accident_vqa/adapted/overall/accuracy``,
``.../category/location/accuracy``) and ``.../timing/seconds_per_100_docs``; artifacts: the run folder's files.
:mod:`copra_bench.report.transfer_section` reads them back.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path
from typing import Any

from .methods import TransferMethod, load_method
from .runner import TransferOutcome, run_task
from .task import TransferTask

__all__ = ["dump", "execute", "metric_key", "write_run_folder"]


def dump(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False, default=str))
    return path


def metric_key(task: str, variant: str, name: str) -> str:
    return f"transfer/{task}/{variant}/{name}"


def _train_params(method: TransferMethod) -> dict[str, Any]:
    """The trained run's seed and data (from its config.yaml), when the checkpoint sits in a run directory."""
    run_config = Path(method.source).parent.parent / "config.yaml"
    if not run_config.is_file():
        return {}
    import yaml

    config = yaml.safe_load(run_config.read_text()) or {}
    data = config.get("data") or {}
    return {"train.seed_everything": config.get("seed_everything"), "train.data": data.get("class_path", ""),
            "train.run_dir": str(run_config.parent)}


def write_run_folder(folder: Path, outcome: TransferOutcome, method: TransferMethod,
                     protocol: dict[str, Any]) -> dict[str, float]:
    """``metrics.json``, ``predictions/<variant>.json``, ``official/<variant>/*``, ``faults.json``; the flat
    metrics (as logged to MLflow)."""
    task = outcome.task
    flat: dict[str, float] = {}
    document: dict[str, Any] = {"task": task.name, "method": method.name, "ckpt_path": method.source,
                                "protocol": protocol, "documents": len(outcome.data.documents), "variants": {}}
    for variant, result in outcome.variants.items():
        metrics = dict(result.metrics)
        metrics["timing/seconds_per_100_docs"] = result.seconds_per_100_docs
        flat.update({metric_key(task.name, variant, k): v for k, v in metrics.items()})
        document["variants"][variant] = {"metrics": metrics, "metric_info": result.metric_info,
                                         "generate_s": result.generate_s}
        dump(folder / "predictions" / f"{variant}.json", [r.as_json() for r in result.results])
        official = getattr(task, "official_predictions", None)
        if official is not None:
            for name, content in official(result.results).items():
                dump(folder / "official" / variant / name, content)
    faults = outcome.all_faults()
    document["faults"] = {kind: sum(1 for f in faults if f.kind == kind) for kind in sorted({f.kind for f in faults})}
    document["decode_s"] = outcome.decode_s
    dump(folder / "faults.json", [f.as_json() for f in faults])
    dump(folder / "metrics.json", document)
    return flat


def _log_mlflow(folder: Path, flat: dict[str, float], params: dict[str, Any], tags: dict[str, str],
                tracking_uri: str, experiment: str, run_name: str) -> str:
    from mlflow.tracking import MlflowClient

    from copra_bench.store_uri import prepare_sqlite_store
    from copra_bench.tracking import (
        AttachedRun,
        absolute_tracking_uri,
        check_tracking_uri,
    )

    uri = absolute_tracking_uri(tracking_uri)
    check_tracking_uri(uri)
    prepare_sqlite_store(uri)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    run = client.create_run(experiment_id, tags={**tags, "mlflow.runName": run_name})
    target = AttachedRun(client, run.info.run_id)
    target.log_params(params)
    target.log_metrics(flat)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.parent.relative_to(folder)
        target.log_artifact(path, None if str(relative) == "." else str(relative))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _print_summary(outcome: TransferOutcome, folder: Path) -> None:
    task = outcome.task
    headline = "overall/accuracy" if task.kind == "multiple_choice" else "overall/rouge_l_f1"
    for variant, result in outcome.variants.items():
        shown = {k: v for k, v in result.metrics.items() if k.startswith("overall/")}
        text = ", ".join(f"{k.removeprefix('overall/')} {v:.4g}" for k, v in shown.items())
        print(f"{task.name} [{variant}] {headline.removeprefix('overall/')}: {result.metrics.get(headline, float('nan')):.4g}"
              f" | {text} | {result.seconds_per_100_docs:.1f} s per 100 documents")
        for name, why in result.metric_info.get("unavailable", {}).items():
            print(f"  {name}: unavailable ({why})")
    faults = outcome.all_faults()
    if faults:
        counts: dict[str, int] = {}
        for f in faults:
            counts[f.kind] = counts.get(f.kind, 0) + 1
        print(f"{len(faults)} faults (listed in {folder / 'faults.json'}): "
              + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    print(f"run folder: {folder}")


def execute(task: TransferTask, config: dict[str, Any], args: argparse.Namespace) -> int:
    """Load the method, run the task, write the run folder, log to MLflow, print the summary."""
    import torch

    tracking = dict(config.get("tracking") or {})
    uri = args.tracking_uri or tracking.get("tracking_uri", "sqlite:///mlflow.db")
    experiment = args.experiment or tracking.get("experiment_name", "copra_bench")
    local_dir = Path(args.local_dir or tracking.get("local_dir", "outputs"))
    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    torch.manual_seed(args.seed)
    method = load_method(model=args.model, ckpt_path=args.ckpt_path, tracking_uri=uri,
                         allow_untrained=args.allow_untrained, device=device)
    batch_size = int(args.batch_size or config.get("batch_size", 8))
    started = time.perf_counter()
    outcome = run_task(task, method, batch_size=batch_size, compare_unadapted=args.compare_unadapted,
                       frame_size=args.frame_size or config.get("frame_size"),
                       repetition_penalty=config.get("repetition_penalty"), limit=args.limit,
                       progress=lambda done, total: print(f"transfer {task.name}: {done}/{total} documents",
                                                          flush=True))
    name = f"transfer-{task.name}-{method.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    folder = local_dir / "transfer" / name
    protocol = {**task.protocol(), "batch_size": batch_size, "compare_unadapted": bool(args.compare_unadapted),
                "repetition_penalty": config.get("repetition_penalty", "checkpoint"), "limit": args.limit or "all",
                "frame_size": args.frame_size or config.get("frame_size") or "native"}
    flat = write_run_folder(folder, outcome, method, protocol)
    params = {f"transfer.{k}": v for k, v in protocol.items()}
    for result in outcome.variants.values():
        for metric, implementation in result.metric_info.get("implementations", {}).items():
            params[f"transfer.implementation.{metric}"] = implementation
        for metric, why in result.metric_info.get("unavailable", {}).items():
            params[f"transfer.unavailable.{metric}"] = why
    params.update({f"model.{k}": v for k, v in (method.config.get("init_args") or {}).items()})
    params["model.class_path"] = method.config.get("class_path", "")
    params.update(_train_params(method))
    tags = {"subcommand": "transfer", "method": method.name, "transfer.task": task.name, "ckpt_path": method.source,
            "run_dir": str(folder.resolve())}
    print(f"transfer {task.name}: {time.perf_counter() - started:.1f} s")
    _print_summary(outcome, folder)
    if not args.no_mlflow:
        run_id = _log_mlflow(folder, flat, params, tags, uri, experiment, name)
        print(f"logged to MLflow run {run_id} (experiment {experiment!r}, {uri})")
    return 0
