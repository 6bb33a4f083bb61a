"""The CLI's own ``--trainer.strategy ddp`` launcher (Lightning re-launches the command per rank), on 2 CPU processes
(gloo), gives what 1 process gives: a short LoRA SFT fit of 2 ranks x batch 1 equals 1 process x batch 2 step by
step (training loss of the global batch, final weights, validation AUC, test metrics and scores), and a ``test`` of
a checkpoint on 2 ranks equals the 1-process fit's own test. One MLflow run per command (rank 1 creates
none, takes no run lock) and every file written once, by rank 0. A GRPO fit on 2 ranks stopped by SIGTERM stops
every rank after the same step with last.ckpt written, and ``fit --ckpt_path last`` on 2 ranks finishes it."""

from __future__ import annotations

import json
import re
import signal

import numpy as np
import pytest
import torch
import yaml

from copra_bench.cli import main
from copra_bench.evaluation.assembly import load_scores

from .conftest import REPO, SMALL_WORLD
from .faults import (
    CLI,
    db_runs,
    kill,
    logged_steps,
    only_run_dir,
    results_of,
    run,
    run_dirs,
    run_json,
    start,
    train_metrics,
    trained_state,
    wait_for,
)

pytestmark = pytest.mark.slow

IN_DOMAIN = str(REPO / "configs" / "in_domain_synthetic.yaml")
LORA_SFT = str(REPO / "configs" / "model" / "lora_sft_tiny.yaml")
DDP_2 = ("--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu")
FLOAT = 1e-6  # the ranks' gradients are averaged in another order than one batch's
RESUMED_STEPS = 6  # the stopped GRPO run's length: SIGTERM lands after step 1, the resume runs the rest


def _job(folder, cache) -> list[str]:
    """A fit of LoRA SFT (4 steps: 4 training videos, global batch 2, two epochs) on SMALL_WORLD data with 3 test
    videos (an odd count: the ranks get different numbers of videos) and 2 validation clips (one per rank)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {"class_path": "copra_bench.datamodules.SyntheticUCFCrimeDataModule",
            "init_args": {"domain": "A", **SMALL_WORLD, "num_test_normal": 1, "cache_dir": str(cache),
                          "window_seconds": 2.0, "frames_per_window": 4, "val_fraction": 0.34}}
    trainer = {"max_steps": 4, "log_every_n_steps": 1, "num_sanity_val_steps": 0, "enable_progress_bar": False,
               "callbacks": [{"class_path": "copra_bench.tracking.RunArtifacts"},
                             {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                              "init_args": {"save_last": True, "every_n_train_steps": 2, "save_top_k": 0}}]}
    (folder / "data.yaml").write_text(yaml.safe_dump(data))
    (folder / "trainer.yaml").write_text(yaml.safe_dump(trainer))
    return ["--config", IN_DOMAIN, "--model", LORA_SFT, "--data", str(folder / "data.yaml"),
            "--trainer", str(folder / "trainer.yaml"), "--model.init_args.bootstrap_samples", "20"]


def _val_auc(run_dir) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["val/video_auc"]) for r in lines if "val/video_auc" in r]


def _same_scores(a_dir, b_dir, tol: float) -> None:
    a, b = (load_scores(d / "scores" / "synth_ucf_A.npz") for d in (a_dir, b_dir))
    assert [v.name for v in a] == [v.name for v in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x.window_scores, y.window_scores, rtol=0, atol=tol)


def _same_metrics(a: dict, b: dict, tol: float) -> None:
    """Every number of metrics.json within ``tol`` (everything else equal)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key, value in a.items():
            _same_metrics(value, b[key], tol)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same_metrics(x, y, tol)
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, abs=tol, nan_ok=True)
    else:
        assert a == b


def test_ddp_fit_and_test_equal_one_process(tmp_path, synth_cache, monkeypatch, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    # the 1-process reference in this process (the same CLI, without a second interpreter's start-up)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    argv = ["fit", *_job(one, synth_cache), "--data.init_args.batch_size", "2"]
    monkeypatch.chdir(one)
    assert main(argv) == 0, capsys.readouterr().err[-3000:]
    monkeypatch.chdir(tmp_path)
    code, log = run([*CLI, "fit", *_job(two, synth_cache), "--data.init_args.batch_size", "1", *DDP_2], two)
    assert code == 0, log[-3000:]
    one_dir, two_dir = only_run_dir(one), only_run_dir(two)  # rank 1 wrote no run directory of its own
    assert len(db_runs(two)) == 1 and db_runs(two)[0][1] == "FINISHED"

    # step by step: the loss logged at every step is the global batch's (the mean over the 2 ranks)
    steps_one, steps_two = train_metrics(one), train_metrics(two)
    assert sorted(steps_two) == sorted(steps_one) == [0, 1, 2, 3]
    for step, values in steps_one.items():
        assert steps_two[step]["train/loss"] == pytest.approx(values["train/loss"], abs=FLOAT), step
    state_one, state_two = trained_state(one_dir), trained_state(two_dir)
    assert state_one.keys() == state_two.keys()
    assert max((state_one[k] - state_two[k]).abs().max().item() for k in state_one) < FLOAT
    # validation: the 2 clips once each (no DistributedSampler padding), every epoch
    assert _val_auc(two_dir) == _val_auc(one_dir) and len(_val_auc(one_dir)) == 2
    _same_metrics(results_of(two_dir), results_of(one_dir), FLOAT)
    _same_scores(two_dir, one_dir, FLOAT)

    # `test` of the 1-process checkpoint on 2 ranks: that fit's own test (each rank's batches mix other videos,
    # which moves a score by an ulp at most)
    test = tmp_path / "test"
    code, log = run([*CLI, "test", *_job(test, synth_cache), "--ckpt_path",
                     str(one_dir / "checkpoints" / "last.ckpt"), *DDP_2], test)
    assert code == 0, log[-3000:]
    (test_dir,) = run_dirs(test)
    _same_metrics(results_of(test_dir), results_of(one_dir), FLOAT)
    _same_scores(test_dir, one_dir, FLOAT)
    assert log.count("Results (frame level") == 1  # the table printed once, by rank 0
    state = torch.load(one_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert state["global_step"] == 4


def test_sigterm_stops_every_grpo_rank_at_the_same_step_and_the_run_resumes(tmp_path, synth_cache):
    """Static LoRA + GRPO on 2 ranks (not equal to 1 process: each rank samples its rollouts from its own generator;
    docs/scale-out.md), stopped by SIGTERM to the launching process, as a cluster stops a job: every rank stops after
    the same training step with last.ckpt written (both ranks' generators in it), exit 143, the run KILLED; then
    ``fit --ckpt_path last`` on 2 ranks finishes it. Lightning's own SIGTERM handler broadcast inside the handler:
    rank 1 died and rank 0 stopped without a checkpoint, or both hung."""
    job = _job(tmp_path, synth_cache)
    job[job.index(LORA_SFT)] = str(REPO / "configs" / "model" / "lora_grpo_tiny.yaml")
    # no validation: the signal lands in a training step (a stop during validation is a safe point too, elsewhere)
    argv = [*CLI, "fit", *job, "--data.init_args.batch_size", "1", "--data.init_args.val_fraction", "0",
            "--model.init_args.num_generations", "4", "--trainer.max_steps", str(RESUMED_STEPS), *DDP_2]
    process = start(argv, tmp_path)
    wait_for(lambda: logged_steps(tmp_path) >= 1, process, timeout=300, what="two training steps")
    assert kill(process, signal.SIGTERM) == 143
    log = (tmp_path / "run.log").read_text(errors="replace")
    steps = {int(n) for n in re.findall(r"^stopped: .*?after training step (\d+)", log, flags=re.MULTILINE)}
    stopped = re.findall(r"^stopped: ", log, flags=re.MULTILINE)
    assert len(stopped) == 2 and len(steps) == 1, log[-3000:]  # both ranks, after one and the same step
    (step,) = steps
    run_dir = only_run_dir(tmp_path)
    assert run_json(run_dir)["status"] == "KILLED"
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert state["global_step"] == step
    (rng,) = [v for k, v in state["callbacks"].items() if "TrainingRNG" in k]
    assert len(rng["rank_generators"]) == 2
    assert sorted(train_metrics(tmp_path)) == list(range(step))  # every step logged once, by rank 0

    # `fit --ckpt_path last` on 2 ranks continues that run to the end (rank 1 used to miss last.ckpt, start from
    # step 0 and leave both ranks waiting in mismatched collectives)
    code, log = run([*argv, "--ckpt_path", "last"], tmp_path, name="resumed", timeout=400)
    assert code == 0, log[-3000:]
    assert only_run_dir(tmp_path) == run_dir and run_json(run_dir)["status"] == "FINISHED"
    assert sorted(train_metrics(tmp_path)) == list(range(RESUMED_STEPS))  # the steps after the stop, once each
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False,
                      map_location="cpu")["global_step"] == RESUMED_STEPS
