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
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from copra_bench.errors import EvaluationError, TrackingError
from copra_bench.evaluation.assembly import load_meta, load_scores
from copra_bench.evaluation.postprocess import DEFAULT_PRESET, PRESETS
from copra_bench.evaluation.protocol import (
    EvaluationSettings,
    TestSetEvaluation,
    evaluate_test_set,
    protocol_params,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m copra_bench evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="MLflow run id, run directory, or scores .npz file")
    parser.add_argument("--postprocess", help=f"preset: {', '.join(PRESETS)} (default: the run's own, else "
                                              f"{DEFAULT_PRESET}); '<preset>:<dataset>' forces a dataset's parameters")
    parser.add_argument("--bootstrap-samples", type=int, help="bootstrap replicates (default: the run's, else 1000)")
    parser.add_argument("--bootstrap-seed", type=int, help="bootstrap seed (default: the run's, else 0)")
    parser.add_argument("--stride", type=int, help="window stride, for scores files that do not record it")
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


def evaluate_files(files: list[Path], settings: EvaluationSettings, *, stride: int | None = None
                   ) -> list[tuple[TestSetEvaluation, list]]:
    """Evaluate each scores file (test set name = file stem)."""
    out = []
    for path in files:
        meta = load_meta(path)
        step = int(meta["stride"]) if "stride" in meta else stride
        if step is None:
            raise EvaluationError(f"{path} does not record the window stride (written before it was saved); "
                                  "pass --stride (16 in the field)")
        videos = load_scores(path)
        out.append((evaluate_test_set(path.stem, videos, step, settings), videos))
    return out


def _scores_of(folder: Path) -> list[Path]:
    files = sorted((folder / "scores").glob("*.npz"))
    if not files:
        raise EvaluationError(f"{folder}: no scores/*.npz (was the run tested? predictions are not evaluated)")
    return files


def _write(folder: Path, results: list[tuple[TestSetEvaluation, list]], protocol: dict) -> list[Path]:
    from copra_bench.evaluation.plots import save_plots

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "metrics.json"
    path.write_text(json.dumps({"test": {e.name: e.as_json() for e, _ in results}, "protocol": protocol},
                               indent=2, default=str))
    written = [path]
    for evaluation, videos in results:
        written += save_plots(folder / "plots" / evaluation.name, evaluation, videos)
    return written


def _log_to_mlflow(client: Any, run: Any, results: list[tuple[TestSetEvaluation, list]], protocol: dict,
                   settings: EvaluationSettings, files: list[Path]) -> str:
    from mlflow.entities import Metric, Param

    params = run.data.params
    same = params.get("protocol.postprocess", settings.postprocess) == settings.postprocess
    target = run.info.run_id
    if not same:
        tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
        tags.update({"evaluated_from": run.info.run_id,
                     "mlflow.runName": f"{run.info.run_name}+{settings.postprocess}"})
        new = client.create_run(run.info.experiment_id, tags=tags)
        target = new.info.run_id
        keep = [Param(k, v) for k, v in params.items() if not k.startswith("protocol.")]
        for i in range(0, len(keep), 100):
            client.log_batch(target, params=keep[i:i + 100])
    logged = client.get_run(target).data.params
    fresh = [Param(f"protocol.{k}", str(v)) for k, v in protocol.items() if f"protocol.{k}" not in logged]
    for i in range(0, len(fresh), 100):
        client.log_batch(target, params=fresh[i:i + 100])
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for e, _ in results for k, v in e.mlflow_metrics().items()]
    for i in range(0, len(metrics), 500):
        client.log_batch(target, metrics=metrics[i:i + 500])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / settings.postprocess.replace(":", "_")
        written = _write(folder, results, protocol)
        for path in written:
            sub = path.parent.relative_to(Path(tmp)).as_posix()
            client.log_artifact(target, str(path), f"evaluate/{sub}")
        if not same:
            for path in files:
                client.log_artifact(target, str(path), "scores")
    if not same:
        client.set_terminated(target)
    return target


def _evaluate_run_id(run_id: str, args: argparse.Namespace) -> tuple[list, EvaluationSettings, dict]:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from copra_bench.tracking import check_tracking_uri

    check_tracking_uri(args.tracking_uri)
    client = MlflowClient(args.tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise TrackingError(f"no MLflow run {run_id!r} in {args.tracking_uri} ({err}); pass --tracking-uri, or a "
                            "run directory / scores file instead") from None
    recorded = {k[len("protocol."):]: v for k, v in run.data.params.items() if k.startswith("protocol.")}
    settings = _settings(args, recorded)
    local = Path(run.data.tags.get("run_dir", ""))
    with tempfile.TemporaryDirectory() as tmp:
        if run.data.tags.get("run_dir") and (local / "scores").is_dir():
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
        results = evaluate_files(files, settings, stride=args.stride)
        protocol = {**{k: v for k, v in recorded.items() if not _is_evaluation_key(k)},
                    **protocol_params([e for e, _ in results], settings)}
        target = _log_to_mlflow(client, run, results, protocol, settings, files)
    where = "the same run" if target == run_id else f"new run {target} (evaluated_from={run_id})"
    print(f"logged to {where} in {args.tracking_uri}")
    return results, settings, protocol


def _is_evaluation_key(key: str) -> bool:
    """Keys :func:`protocol_params` writes itself (the rest of the recorded protocol is the DataModule's)."""
    own = set(EvaluationSettings().protocol_params()) | {"ap_primary"}
    return key in own or key.startswith("postprocess.")


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
        results = evaluate_files(files, settings, stride=args.stride)
        protocol = {**{k: v for k, v in recorded.items() if not _is_evaluation_key(k)},
                    **protocol_params([e for e, _ in results], settings)}
    else:
        results, settings, protocol = _evaluate_run_id(args.run, args)
    if args.out:
        Path(args.out).write_text(json.dumps({"test": {e.name: e.as_json() for e, _ in results},
                                              "protocol": protocol}, indent=2, default=str))
    from copra_bench.tracking import format_results_table

    print(f"post-processing: {settings.postprocess}; bootstrap: {settings.bootstrap_samples} replicates, "
          f"seed {settings.bootstrap_seed}")
    print(format_results_table({e.name: e.as_json() for e, _ in results}))
    return 0


def evaluate_command(argv: list[str]) -> int:
    """Entry of ``python -m copra_bench evaluate`` (errors are reported by the CLI's ``main``)."""
    return run_evaluate(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_evaluate(sys.argv[1:]))
