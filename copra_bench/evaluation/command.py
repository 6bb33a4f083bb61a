"""``python -m copra_bench evaluate``: recompute every metric of every step from saved scores, without the model.

``--run`` takes an MLflow run id, a run directory (``outputs/<experiment>/<run>/``, holding ``scores/*.npz``) or one
scores file. The evaluation settings (preset, bootstrap) are the run's own (``protocol.*`` params or the run
directory's ``metrics.json``) unless given on the command line.

* A run id with the run's own preset: the metrics are logged again to the same run (same keys, same numbers), the
  new ``metrics.json`` and plots under the artifact folder ``evaluate/<preset>/``.
* A run id with another preset: MLflow params cannot change, so a new run is made in the same experiment, named
  ``<run name>+<preset>``, with the original's params and tags, ``protocol.*`` params of this evaluation and the tag
  ``evaluated_from=<run id>``; the report groups runs by ``protocol.*``, so the two never mix.
* A directory or a file: the table is printed (``--out`` writes the metrics JSON).

Each test set's dataset family (which picks its post-processing parameters and primary AP) is the one its scores
file records (``meta/dataset_family``); files written before it was recorded need ``--dataset`` (or a preset that
forces one, ``<preset>:<dataset>``). Everything is written by the run's one writer,
:class:`~copra_bench.tracking.results.RunResultsWriter`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from copra_bench.errors import EvaluationError, TrackingError
from copra_bench.evaluation.assembly import load_meta, load_scores
from copra_bench.evaluation.evaluator import TestSetResult
from copra_bench.evaluation.postprocess import DATASET_FAMILIES, DEFAULT_PRESET, PRESETS
from copra_bench.evaluation.protocol import (
    EvaluationSettings,
    evaluate_test_set,
    protocol_params,
)
from copra_bench.evaluation.recipes import forced_family
from copra_bench.tracking import (
    AttachedRun,
    RunResultsWriter,
    check_tracking_uri,
    format_results_table,
    metrics_document,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m copra_bench evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="MLflow run id, run directory, or scores .npz file")
    parser.add_argument("--postprocess", help=f"preset: {', '.join(PRESETS)} (default: the run's own, else "
                                              f"{DEFAULT_PRESET}); '<preset>:<dataset>' forces a dataset's parameters, "
                                              "',key=value' adds options (docs/evaluation.md)")
    parser.add_argument("--bootstrap-samples", type=int, help="bootstrap replicates (default: the run's, else 1000)")
    parser.add_argument("--bootstrap-seed", type=int, help="bootstrap seed (default: the run's, else 0)")
    parser.add_argument("--stride", type=int, help="window stride, for scores files that do not record it")
    parser.add_argument("--dataset", choices=DATASET_FAMILIES,
                        help="dataset family of the test sets, for scores files that do not record it")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="MLflow store of --run <id>")
    parser.add_argument("--out", help="write the metrics as JSON to this file")
    return parser


def _settings(args: argparse.Namespace, recorded: dict[str, Any]) -> EvaluationSettings:
    """Command line first, then what the run recorded, then the defaults."""
    def pick(flag: Any, key: str, default: Any, kind: type) -> Any:
        if flag is not None:
            return flag
        return kind(recorded[key]) if key in recorded else default

    return EvaluationSettings(postprocess=pick(args.postprocess, "postprocess", DEFAULT_PRESET, str),
                              bootstrap_samples=pick(args.bootstrap_samples, "bootstrap_samples", 1000, int),
                              bootstrap_seed=pick(args.bootstrap_seed, "bootstrap_seed", 0, int))


def _family_of(path: Path, meta: dict, settings: EvaluationSettings, family: str | None) -> str:
    """The test set's dataset family: recorded in the file, else ``--dataset``, else the family the preset forces."""
    if "dataset_family" in meta:
        return str(meta["dataset_family"])
    forced = forced_family(settings.postprocess)
    if family or forced:
        return family or forced
    raise EvaluationError(f"{path} does not record its dataset family (written before it was saved); pass --dataset "
                          f"(one of {', '.join(DATASET_FAMILIES)}) or --postprocess <preset>:<dataset>")


def evaluate_files(files: list[Path], settings: EvaluationSettings, *, stride: int | None = None,
                   family: str | None = None) -> list[TestSetResult]:
    """Evaluate each scores file (test set name = file stem)."""
    out = []
    for path in files:
        meta = load_meta(path)
        step = int(meta["stride"]) if "stride" in meta else stride
        if step is None:
            raise EvaluationError(f"{path} does not record the window stride (written before it was saved); "
                                  "pass --stride (16 in the field)")
        own = _family_of(path, meta, settings, family)
        videos = load_scores(path)
        out.append(TestSetResult(path.stem, evaluate_test_set(path.stem, videos, step, settings, family=own),
                                 videos, step, own))
    return out


def _scores_of(folder: Path) -> list[Path]:
    files = sorted((folder / "scores").glob("*.npz"))
    if not files:
        raise EvaluationError(f"{folder}: no scores/*.npz (was the run tested? predictions are not evaluated)")
    return files


def _target_run(client: Any, run: Any, settings: EvaluationSettings) -> AttachedRun:
    """The run itself when the preset is its own; else a new run in its experiment with its params and tags (MLflow
    params cannot change), named ``<run name>+<preset>`` and tagged ``evaluated_from``."""
    if run.data.params.get("protocol.postprocess", settings.postprocess) == settings.postprocess:
        return AttachedRun(client, run.info.run_id)
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    tags.update({"evaluated_from": run.info.run_id, "mlflow.runName": f"{run.info.run_name}+{settings.postprocess}"})
    target = AttachedRun(client, client.create_run(run.info.experiment_id, tags=tags).info.run_id)
    target.log_params({k: v for k, v in run.data.params.items() if not k.startswith("protocol.")})
    return target


def _evaluate_run_id(run_id: str, args: argparse.Namespace) -> tuple[list, EvaluationSettings, dict]:
    from mlflow.exceptions import MlflowException

    from copra_bench.store_uri import (
        tracking_client,  # mlflow is slow to import: only here
    )

    check_tracking_uri(args.tracking_uri)
    client = tracking_client(args.tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise TrackingError(f"no MLflow run {run_id!r} in {args.tracking_uri} ({err}); pass --tracking-uri, or a "
                            "run directory / scores file instead") from None
    recorded = {k[len("protocol."):]: v for k, v in run.data.params.items() if k.startswith("protocol.")}
    settings = _settings(args, recorded)
    local = Path(run.data.tags.get("run_dir", ""))
    with tempfile.TemporaryDirectory() as tmp:
        # The run's local copy when it holds the scores; else (another machine, a scores folder emptied or never
        # filled) the tracked copy.
        if run.data.tags.get("run_dir") and any((local / "scores").glob("*.npz")):
            folder = local
        else:
            from mlflow.artifacts import download_artifacts

            try:
                download_artifacts(run_id=run_id, artifact_path="scores", dst_path=tmp,
                                   tracking_uri=args.tracking_uri)
            except MlflowException as err:
                raise EvaluationError(f"run {run_id} has no scores artifacts ({err})") from None
            folder = Path(tmp)
        files = _scores_of(folder)
        results = evaluate_files(files, settings, stride=args.stride, family=args.dataset)
        protocol = _protocol(recorded, results, settings)
        target = _target_run(client, run, settings)
        preset = re.sub(r"[^A-Za-z0-9_.-]+", "_", settings.postprocess)
        writer = RunResultsWriter(Path(tmp) / "evaluate" / preset, target, artifact_root=f"evaluate/{preset}")
        writer.log_metrics(results)
        writer.save_test(results, protocol=protocol, with_scores=False)
        if target.run_id != run_id:
            for path in files:
                writer.upload(path, "scores")
            client.set_terminated(target.run_id)
    where = "the same run" if target.run_id == run_id else f"new run {target.run_id} (evaluated_from={run_id})"
    print(f"logged to {where} in {args.tracking_uri}")
    return results, settings, protocol


def _is_evaluation_key(key: str) -> bool:
    """Keys :func:`protocol_params` writes itself (the rest of the recorded protocol is the DataModule's)."""
    own = set(EvaluationSettings().protocol_params()) | {"ap_primary"}
    return key in own or key.startswith("postprocess.")


def _protocol(recorded: dict[str, Any], results: list[TestSetResult], settings: EvaluationSettings) -> dict:
    """The DataModule's recorded protocol with this evaluation's own keys."""
    return {**{k: v for k, v in recorded.items() if not _is_evaluation_key(k)},
            **protocol_params([r.evaluation for r in results], settings)}


def run_evaluate(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    source = Path(args.run)
    if source.suffix == ".npz" or source.is_dir():
        if not source.exists():
            raise EvaluationError(f"{source} does not exist")
        folder = source.parent.parent if source.suffix == ".npz" else source
        recorded = {}
        if (folder / "metrics.json").is_file():
            recorded = json.loads((folder / "metrics.json").read_text()).get("protocol", {})
        settings = _settings(args, recorded)
        files = [source] if source.suffix == ".npz" else _scores_of(source)
        results = evaluate_files(files, settings, stride=args.stride, family=args.dataset)
        protocol = _protocol(recorded, results, settings)
    else:
        results, settings, protocol = _evaluate_run_id(args.run, args)
    if args.out:
        Path(args.out).write_text(json.dumps(metrics_document(results, protocol=protocol), indent=2, default=str))
    print(f"post-processing: {settings.postprocess}; bootstrap: {settings.bootstrap_samples} replicates, "
          f"seed {settings.bootstrap_seed}")
    print(format_results_table({r.name: r.evaluation.as_json() for r in results}))
    return 0


def evaluate_command(argv: list[str]) -> int:
    """Entry of ``python -m copra_bench evaluate`` (errors are reported by the CLI's ``main``)."""
    return run_evaluate(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_evaluate(sys.argv[1:]))
