"""Faults of training, through the CLI as a user meets them (issue 14): learning rates that break training, and
checkpoints that must never be written non-finite or half."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
import yaml

from .conftest import copy_empty_store
from .fault_runs import (
    CONFIGS,
    MAIN,
    data_config,
    run_cli,
    trainer_checkpointing_every_step,
)


# ---------------------------------------------------------------------------------------------- learning rates
def test_an_infinite_learning_rate_is_refused_before_anything_loads(tmp_path, monkeypatch, synth_cache, capsys):
    monkeypatch.chdir(tmp_path)
    code, text = run_cli(capsys, "fit", "--config", MAIN, "--data", data_config(tmp_path, synth_cache),
                      "--model.init_args.lr", "1e999")
    assert code == 2 and "model.lr must be a finite number > 0, got inf" in text
    assert "Traceback" not in text and not (tmp_path / "outputs").exists()


def _all_finite(checkpoint: Path) -> tuple[int, int]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    tensors = [t for t in state["state_dict"].values() if t.is_floating_point()]
    tensors += [t for group in state["optimizer_states"] for s in group["state"].values() for t in s.values()
                if isinstance(t, torch.Tensor) and t.is_floating_point()]
    return sum(bool(torch.isfinite(t).all()) for t in tensors), len(tensors)


@pytest.mark.slow
def test_an_optimiser_overflow_is_the_guards_error_and_no_checkpoint_is_non_finite(tmp_path, monkeypatch,
                                                                                    synth_cache, empty_store, capsys):
    monkeypatch.chdir(tmp_path)
    copy_empty_store(empty_store, tmp_path / "mlflow.db")  # the config's sqlite:///mlflow.db, already created
    base = ["fit", "--config", MAIN, "--data", data_config(tmp_path, synth_cache), "--trainer",
            trainer_checkpointing_every_step(tmp_path), "--model.init_args.epochs", "1",
            "--trainer.limit_train_batches", "3", "--model.init_args.lr", "1e38"]
    code, text = run_cli(capsys, *base)  # Adam's first step size, lr / (1 - 0.9), does not fit a float32
    assert code == 2 and "the optimiser step overflowed at global step 0" in text and "lower model.lr" in text
    assert "Traceback" not in text and not list(tmp_path.rglob("*.ckpt"))

    # With a warm-up the first steps fit: checkpoints are written after them, and the step that breaks is stopped
    code, text = run_cli(capsys, *base, "--model.init_args.warmup_steps", "3")
    assert code == 2 and "at global step 1" in text and "model.lr" in text and "Traceback" not in text
    (last,) = tmp_path.rglob("last.ckpt")
    finite, total = _all_finite(last)
    assert total > 0 and finite == total


@pytest.mark.slow
def test_a_collapse_is_a_warning_naming_the_step(tmp_path, monkeypatch, synth_cache, empty_store, capsys):
    monkeypatch.chdir(tmp_path)
    copy_empty_store(empty_store, tmp_path / "mlflow.db")
    with pytest.warns(UserWarning, match=r"collapse at global step 2: all 2 validation scores are") as caught:
        code, _ = run_cli(capsys, "fit", "--config", MAIN, "--data", data_config(tmp_path, synth_cache),
                       "--model.init_args.epochs", "1", "--trainer.limit_train_batches", "2",
                       "--model.init_args.lr", "1e9", "--test_after_fit", "false")
    assert code == 0
    assert "lower model.lr (now 1e+09)" in next(str(w.message) for w in caught if "collapse at" in str(w.message))




def test_a_checkpoint_write_on_a_full_disk_names_the_file_and_keeps_the_last_one(tmp_path, monkeypatch):
    from lightning.fabric.utilities import cloud_io

    from copra_bench.errors import OutputWriteError
    from copra_bench.tracking.checkpoint_io import NamedCheckpointIO

    trainer = yaml.safe_load((CONFIGS / "trainer" / "default.yaml").read_text())
    assert {"class_path": "copra_bench.tracking.checkpoint_io.NamedCheckpointIO"} in trainer["plugins"]
    last = tmp_path / "checkpoints" / "last.ckpt"
    plugin = NamedCheckpointIO()
    plugin.save_checkpoint({"weights": torch.ones(3)}, last)
    # the file object Lightning's fsspec writes local checkpoints through (half a file, then the disk is full)
    with cloud_io.fsspec.open(str(tmp_path / "probe"), "wb") as probe:
        opener = type(probe)
    write = opener.write

    def half_then_full(self, data):
        write(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(opener, "write", half_then_full)
    with pytest.raises(OutputWriteError, match=f"cannot write {last}: No space left on device. The disk is full"):
        plugin.save_checkpoint({"weights": torch.zeros(1000)}, last)
    monkeypatch.undo()
    assert torch.equal(torch.load(last)["weights"], torch.ones(3)) and list(last.parent.iterdir()) == [last]
    assert opener.__name__ == "LocalFileOpener"


def test_a_checkpoint_with_a_non_finite_tensor_is_never_written():
    from copra_bench.baselines import PromptTuning

    from copra_bench.rl.engine import TrainingError

    method = PromptTuning(backbone="tiny-qwen2-vl", backbone_dtype="float32", num_virtual_tokens=2)
    state = {k: v.clone() for k, v in method.state_dict().items()}
    method.on_save_checkpoint({"state_dict": dict(state), "optimizer_states": []})  # finite: written
    trained = next(k for k in state if k not in method.frozen_state_keys())
    state[trained][0] = float("nan")
    with pytest.raises(TrainingError, match=rf"checkpoint not written: 1 of \d+ tensors are not finite \(e.g. "
                                            rf"{trained}\).*last checkpoint on disk is kept"):
        method.on_save_checkpoint({"state_dict": state, "optimizer_states": []})
    adam = {"state": {0: {"exp_avg_sq": torch.tensor([float("inf")])}}, "param_groups": []}
    with pytest.raises(TrainingError, match="optimizer.0.state.0.exp_avg_sq"):
        method.on_save_checkpoint({"state_dict": method.state_dict(), "optimizer_states": [adam]})
