"""COPRA as a benchmark method: the shared method contract, start-from-frozen, training only the generator,
temporal granularity, checkpoint/resume and the non-finite guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from copra_bench.baselines import FrozenVLM
from copra_bench.copra import COPRA
from copra_bench.datamodules import SyntheticUCFCrimeDataModule
from copra_bench.errors import CopraError
from copra_bench.rl import TrainingError

from .test_methods import MethodContract, _checksum, _trainer

TINY = dict(rank=2, alpha=4.0, generator_depth=1, generator_width=32, generator_heads=2, segment_size=16,
            rollout_mode="constrained", num_generations=4, beta=0.04, lr=1e-2)


def _copra(**kwargs) -> COPRA:
    return COPRA(**{**TINY, **kwargs})


class TestCOPRA(MethodContract):
    def make_model(self, **kwargs):
        return _copra(**kwargs)

    def test_starts_from_the_frozen_model_exactly(self):
        frames = torch.randint(0, 256, (3, 4, 48, 64, 3), dtype=torch.uint8)
        adapted = _copra(frames_per_window=4).score_windows(frames)
        frozen = FrozenVLM(frames_per_window=4).score_windows(frames)
        assert torch.equal(adapted.p_anomaly, frozen.p_anomaly)  # B = 0 at init: not merely close

    def test_logs_generator_size_and_generated_values(self):
        counts = _copra().parameter_counts()
        assert counts["params_trainable"] == counts["generator_params"] > 0
        assert counts["generated_lora_values"] > 0


def test_training_moves_the_generator_only(small_world):
    dm = SyntheticUCFCrimeDataModule(domain="A", **small_world)
    model = _copra(frames_per_window=dm.frames_per_window, beta=0.0)
    frozen_before = _checksum(model.backbone)
    generator_before = {k: v.clone() for k, v in model.model.generator.state_dict().items()}
    _trainer(max_steps=2, num_sanity_val_steps=0, limit_val_batches=0).fit(model, datamodule=dm)
    assert _checksum(model.backbone) == frozen_before
    changed = [k for k, v in model.model.generator.state_dict().items() if not torch.equal(v, generator_before[k])]
    assert changed, "no generator parameter was updated by GRPO"
    assert "head_b" in " ".join(changed), "B's head (zero at init) must receive gradient"


@pytest.mark.parametrize("granularity", ["chunk", "video"])
def test_coarser_granularity_generates_once_per_unit(small_world, granularity):
    dm = SyntheticUCFCrimeDataModule(domain="A", **{**small_world, "batch_size": 3})
    model = _copra(frames_per_window=dm.frames_per_window, granularity=granularity, chunk_seconds=2.0)
    with torch.no_grad():  # a non-zero B so the conditioning matters
        for p in model.model.generator.head_b.parameters():
            p.normal_(0, 0.5)
    calls: list[int] = []
    generate = model.model.generate_deltas
    model.model.generate_deltas = lambda frames: calls.append(len(frames)) or generate(frames)
    _trainer().test(model, datamodule=dm, verbose=False)
    videos = model.test_results["synth_ucf_A"].videos
    records = dm.test_sets[0].records
    if granularity == "video":
        expected = len(records)
    else:
        expected = sum(len({(i * 16) // round(2.0 * r.fps) for i in range(len(v.window_scores))})
                       for r, v in zip(records, videos, strict=True))
    assert sum(calls) == expected
    # Windows of one unit share one LoRA; a per-window model scores them differently.
    per_window = _copra(frames_per_window=dm.frames_per_window)
    per_window.model.load_state_dict(model.model.state_dict())
    _trainer().test(per_window, datamodule=dm, verbose=False)
    other = per_window.test_results["synth_ucf_A"].videos
    assert not np.allclose(np.concatenate([v.window_scores for v in videos]),
                           np.concatenate([v.window_scores for v in other]))


def test_unknown_granularity_is_a_config_error():
    with pytest.raises(CopraError, match="granularity"):
        _copra(granularity="scene")


def test_non_finite_generator_stops_naming_step_and_videos(small_world, tmp_path):
    dm = SyntheticUCFCrimeDataModule(domain="A", **small_world)
    model = _copra(frames_per_window=dm.frames_per_window)
    with torch.no_grad():
        model.model.generator.head_a[-1].bias.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"non-finite generated LoRA weights at global step 0 \(inputs: .*_x264"):
        _trainer(max_steps=1, num_sanity_val_steps=0, limit_val_batches=0).fit(model, datamodule=dm)


@pytest.mark.slow
@pytest.mark.parametrize(("class_path", "init_args"), [
    ("copra_bench.copra.COPRA", TINY),
    ("copra_bench.baselines.LoRASFT", dict(rank=2, alpha=4.0, lr=1e-2, answer_loss="binary")),
])
def test_a_killed_fit_resumes_from_last_checkpoint_in_the_same_run(tmp_path, monkeypatch, synth_cache, class_path,
                                                                   init_args):
    """``fit --ckpt_path last`` continues a run that died: same MLflow run, trained tensors/optimizer/step
    restored (COPRA's generator; a baseline's LoRA, which lives inside the backbone's modules)."""
    import importlib
    import sqlite3

    import yaml

    from copra_bench.cli import main

    from .test_cli import MAIN, _small_data_config

    module, name = class_path.rsplit(".", 1)
    method = getattr(importlib.import_module(module), name)
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model.yaml"
    model.write_text(yaml.safe_dump({"class_path": class_path, "init_args": init_args}))
    trainer = tmp_path / "trainer.yaml"
    trainer.write_text(yaml.safe_dump({
        "max_steps": 4, "log_every_n_steps": 1, "num_sanity_val_steps": 0, "limit_val_batches": 0, "enable_progress_bar": False,
        "callbacks": [{"class_path": "copra_bench.tracking.RunArtifacts"},
                      {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                       "init_args": {"save_last": True, "every_n_train_steps": 1, "save_top_k": 0}}]}))
    argv = ["fit", "--config", MAIN, "--data", _small_data_config(tmp_path, synth_cache), "--model", str(model),
            "--trainer", str(trainer), "--data.init_args.batch_size", "1", "--test_after_fit", "false"]

    original = method.training_step
    trained: list[int] = []

    def recording(self, batch, batch_idx):
        trained.extend(batch["video_index"].tolist())
        return original(self, batch, batch_idx)

    def dies_at_third_step(self, batch, batch_idx):
        if self.global_step == 2:
            raise RuntimeError("node lost")
        return recording(self, batch, batch_idx)

    monkeypatch.setattr(method, "training_step", dies_at_third_step)
    with pytest.raises(RuntimeError, match="node lost"):
        main(argv)
    (last,) = tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=False)["global_step"] == 2
    monkeypatch.setattr(method, "training_step", recording)

    assert main([*argv, "--ckpt_path", "last"]) == 0
    # 4 training videos, batch 1, 4 steps = one epoch: the resumed run trains on the two the dead one had not seen
    assert sorted(trained) == [0, 1, 2, 3], trained
    db = sqlite3.connect(tmp_path / "mlflow.db")
    (run_id, status), = db.execute("select run_uuid, status from runs").fetchall()
    assert status == "FINISHED" and last.parent.parent.name == run_id
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 4
    assert state["optimizer_states"][0]["state"], "optimizer moments must be saved"
    # never the frozen VLM: the only backbone tensors are a baseline's LoRA
    backbone_keys = [k for k in state["state_dict"] if k.startswith("backbone.") or ".backbone." in k]
    assert all(".lora_" in k for k in backbone_keys)
    assert bool(backbone_keys) == (name == "LoRASFT")
    steps = [s for (s,) in db.execute("select step from metrics where key='train/loss' and run_uuid=?", (run_id,))]
    assert sorted(steps) == [0, 1, 2, 3], "each optimisation step is logged once, across the kill"


@pytest.mark.parametrize("backbone", ["tiny-qwen2-vl", "tiny-internvl"])
def test_one_vision_pass_scores_like_two(backbone):
    """Window granularity reuses the encoder pass that conditions the generator (Qwen2-VL); same scores."""
    from copra_bench.copra import COPRAModel
    from copra_bench.vlm import VLMBackbone

    model = COPRAModel(VLMBackbone.load(backbone), rank=2, depth=1, width=32, heads=2, segment_size=16)
    with torch.no_grad():
        for p in model.generator.head_b.parameters():
            p.normal_(0, 0.5)
    frames = torch.randint(0, 256, (3, 4, 48, 64, 3), dtype=torch.uint8)
    once = model.score_self_conditioned(frames, return_features=True)
    twice = model.score(frames, model.generate_deltas(frames), return_features=True)
    torch.testing.assert_close(once.p_anomaly, twice.p_anomaly, atol=1e-5, rtol=0)
    torch.testing.assert_close(once.features, twice.features, atol=1e-5, rtol=0)
    frozen = model.backbone.score(frames)
    assert (once.p_anomaly - frozen.p_anomaly).abs().max() > 1e-3, "the generated LoRA must change the scores"


def test_a_small_unit_cache_changes_cost_not_scores(small_world):
    """A batch may span more units than the LoRA cache holds (1 s chunks: one window each, 5 per batch): same
    scores, and each unit generated once."""
    dm = SyntheticUCFCrimeDataModule(domain="A", **{**small_world, "batch_size": 5})
    results, weights = [], None
    for size in (16, 1):
        model = _copra(frames_per_window=dm.frames_per_window, granularity="chunk", chunk_seconds=1.0,
                       condition_cache_size=size)
        if weights is None:
            with torch.no_grad():
                for p in model.model.generator.head_b.parameters():
                    p.normal_(0, 0.5)
            weights = model.model.state_dict()
        model.model.load_state_dict(weights)
        calls: list[int] = []
        generate = model.model.generate_deltas
        model.model.generate_deltas = lambda frames, generate=generate: calls.append(len(frames)) or generate(frames)
        _trainer().test(model, datamodule=dm, verbose=False)
        results.append((np.concatenate([v.window_scores for v in model.test_results["synth_ucf_A"].videos]),
                        sum(calls)))
    assert results[0][1] == results[1][1] == len(results[0][0])
    results = [scores for scores, _ in results]
    np.testing.assert_allclose(results[0], results[1], atol=1e-6)
