"""What a new user meets first: a fast ``--help``, no silent scoring of untrained weights, progress with totals."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from torch.utils.data import DataLoader

from copra_bench.cli import main
from copra_bench.datamodules import SyntheticUCFCrimeDataModule
from copra_bench.errors import CopraError
from copra_bench.lightning_cli import check_trained_weights
from copra_bench.tool_table import TOOLS
from copra_bench.tracking import progress
from copra_bench.tracking.progress import LineProgressBar, ProgressForOutput, progress_line

from .conftest import REPO

MAIN = str(REPO / "configs" / "cross_domain.yaml")
FROZEN = str(REPO / "configs" / "model" / "frozen_tiny.yaml")


def test_top_level_help_imports_no_heavy_module(tmp_path):
    probe = ("import sys\nfrom copra_bench.cli import main\ncode = main(['--help'])\n"
             "heavy = [m for m in ('torch', 'lightning', 'transformers', 'mlflow') if m in sys.modules]\n"
             "print('HEAVY', heavy, code)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                          env=os.environ.copy(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY [] 0" in done.stdout
    assert all(f"'{name}'" in done.stdout for name in TOOLS)
    assert all(f"  {sub} " in done.stdout for sub in ("fit", "validate", "test", "predict"))


@pytest.mark.parametrize("subcommand", ["test", "predict", "validate"])
def test_scoring_a_trained_method_without_checkpoint_is_an_error(subcommand, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([subcommand, "--config", MAIN]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "COPRA" in err and "--ckpt_path" in err and "--allow_untrained true" in err
    assert not Path("outputs").exists() and not Path("mlflow.db").exists(), "the error must come before any work"


def test_the_untrained_check_reads_only_the_config():
    copra = {"model": {"class_path": "copra_bench.copra.COPRA"}, "ckpt_path": None, "allow_untrained": False}
    with pytest.raises(CopraError, match="--ckpt_path"):
        check_trained_weights("test", copra)
    check_trained_weights("fit", copra)  # fit trains first
    check_trained_weights("test", {**copra, "ckpt_path": "outputs/1/abc/checkpoints/last.ckpt"})
    check_trained_weights("predict", {**copra, "allow_untrained": True})
    frozen = {"model": {"class_path": "copra_bench.baselines.FrozenVLM"}, "ckpt_path": None}
    check_trained_weights("test", frozen)  # nothing to train: always allowed
    sft = {"model": {"class_path": "copra_bench.baselines.LoRASFT"}, "ckpt_path": None}
    with pytest.raises(CopraError, match="LoRASFT"):
        check_trained_weights("validate", sft)


def test_frozen_baseline_config_passes_the_check(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):  # --print_config: parsed, printed, nothing run
        main(["test", "--config", MAIN, "--model", FROZEN, "--print_config"])
    assert "allow_untrained: false" in capsys.readouterr().out


def test_progress_line_has_totals_rate_and_eta():
    assert progress_line("test synth_ucf_B", 30, 120, 15.0) == (
        "test synth_ucf_B: 30/120 batches (25%), 2.00 batch/s, elapsed 0:00:15, ETA 0:00:45")
    assert progress_line("test x", 7, math.inf, 3.5) == "test x: 7 batches, 2.00 batch/s, elapsed 0:00:03"


def test_line_progress_prints_every_interval_and_at_the_end(monkeypatch, capsys):
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    bar = LineProgressBar(interval_s=10)
    bar._begin("fit epoch 1/1", 50)
    for batch in range(1, 51):
        now[0] = batch * 1.0
        bar._advance(batch)
    bar._finish()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[1].split()[0] for line in lines] == ["10/50", "20/50", "30/50", "40/50", "50/50"]
    assert lines[0].endswith("ETA 0:00:40") and lines[-1].endswith("ETA 0:00:00")
    bar._begin("test t", math.inf)
    now[0] += 3
    bar._advance(4)
    bar._finish()  # a stage without a total still gets its last line
    assert capsys.readouterr().out.splitlines() == ["test t: 4 batches, 1.33 batch/s, elapsed 0:00:03"]
    with pytest.raises(ValueError, match="interval_s"):
        LineProgressBar(interval_s=0)


def test_the_bar_follows_where_stdout_goes(monkeypatch):
    monkeypatch.setattr(sys, "stdout", SimpleNamespace(isatty=lambda: False))
    assert isinstance(ProgressForOutput(interval_s=5), LineProgressBar)
    monkeypatch.setattr(sys, "stdout", SimpleNamespace(isatty=lambda: True))
    terminal = ProgressForOutput()
    assert isinstance(terminal, (progress.RichBarWithTotals, progress.TQDMBarWithTotals))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dense_test_loader_knows_its_batch_count(num_workers, small_world):
    dm = SyntheticUCFCrimeDataModule(domain="A", **{**small_world, "num_workers": num_workers})
    dm.setup("test")
    for loader in dm.test_dataloader():
        dataset = loader.dataset
        batches = list(DataLoader(dataset, batch_size=3, num_workers=num_workers, collate_fn=loader.collate_fn))
        assert dataset.num_batches(3, num_workers=num_workers) == len(batches)
        assert sum(len(b["video_index"]) for b in batches) == dataset.num_windows()
        # two DDP ranks together read every window once
        per_rank = [dataset.num_batches(3, num_workers=num_workers, rank=r, world_size=2) for r in (0, 1)]
        assert sum(per_rank) >= math.ceil(dataset.num_windows() / 3) and all(n > 0 for n in per_rank)


def test_fit_total_counts_every_epoch_or_the_step_limit():
    trainer = SimpleNamespace(num_training_batches=2, max_epochs=40, max_steps=-1, accumulate_grad_batches=1)
    assert progress.fit_batch_total(trainer) == 80  # the main job: 40 epochs of 2 batches
    assert progress.fit_batch_total(SimpleNamespace(**{**vars(trainer), "max_steps": 30})) == 30
    assert progress.fit_batch_total(SimpleNamespace(**{**vars(trainer), "max_steps": 30,
                                                       "accumulate_grad_batches": 2})) == 60
    assert progress.fit_batch_total(SimpleNamespace(**{**vars(trainer), "max_epochs": -1})) == math.inf
