"""Contract tests every method passes (fit, test, predict on tiny synthetic data), and the shared test loop."""

from __future__ import annotations

import hashlib

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from copra_bench.baselines import FrozenVLM
from copra_bench.bench_module import BenchModule
from copra_bench.datamodules import SyntheticUCFCrimeDataModule
from copra_bench.datamodules.video_io import read_frames
from copra_bench.vlm import ScoreOutput
from copra_bench.windows import window_frame_indices


def _trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kwargs)


def _checksum(module: torch.nn.Module) -> str:
    """Digest of the module's frozen tensors (trainable ones a method injected into the backbone, e.g. a peft
    LoRA, are left out: they are meant to change)."""
    digest = hashlib.sha1()
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    for name, tensor in sorted(module.state_dict(keep_vars=True).items()):
        if id(tensor) in trainable:
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


class MethodContract:
    """What every method must do on the shared protocol. Subclasses provide ``make_model``."""

    def make_model(self, **kwargs) -> BenchModule:
        raise NotImplementedError

    @pytest.fixture()
    def datamodule(self, small_world):
        return SyntheticUCFCrimeDataModule(domain="A", **small_world)

    def test_fit_test_predict(self, datamodule):
        model = self.make_model(frames_per_window=datamodule.frames_per_window)
        before = _checksum(model.backbone)
        trainer = _trainer(**{"max_epochs": 1, **model.trainer_arguments})
        trainer.fit(model, datamodule=datamodule)
        assert _checksum(model.backbone) == before, "the frozen VLM changed during fit"
        trainer.test(model, datamodule=datamodule, verbose=False)
        (result,) = model.test_results.values()
        videos = result.videos
        scores = np.concatenate([v.frame_scores for v in videos])
        gt = np.concatenate([v.gt for v in videos])
        assert abs(result.metrics.auc - roc_auc_score(gt, scores)) < 1e-6
        assert abs(result.metrics.ap - average_precision_score(gt, scores)) < 1e-6
        trainer.predict(model, datamodule=datamodule)
        (predicted,) = model.predict_results.values()
        for a, b in zip(predicted, videos, strict=True):
            np.testing.assert_allclose(a.window_scores, b.window_scores, atol=1e-6)

    def test_scores_do_not_depend_on_batch_size_or_workers(self, small_world):
        results = []
        for batch, workers in ((1, 0), (5, 2)):
            dm = SyntheticUCFCrimeDataModule(domain="A", **{**small_world, "batch_size": batch,
                                                            "num_workers": workers})
            model = self.make_model(frames_per_window=dm.frames_per_window)
            _trainer().test(model, datamodule=dm, verbose=False)
            results.append(np.concatenate([v.window_scores for v in model.test_results["synth_ucf_A"].videos]))
        np.testing.assert_allclose(results[0], results[1], atol=1e-5)

    def test_checkpoint_holds_no_frozen_weights(self):
        model = self.make_model()
        checkpoint = {"state_dict": model.state_dict()}
        model.on_save_checkpoint(checkpoint)
        frozen = model.frozen_state_keys()
        assert frozen and not (frozen & set(checkpoint["state_dict"]))
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable <= set(checkpoint["state_dict"])


    def test_checkpoint_restores_the_trained_state(self, tmp_path):
        model = self.make_model(frames_per_window=4, keep_features=False)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():  # a trained state that differs from the initial one
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(torch.randn(p.shape, generator=g).to(p) * 0.1)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, max_epochs=0,
                            default_root_dir=str(tmp_path))
        trainer.strategy.connect(model)
        trainer.save_checkpoint(tmp_path / "m.ckpt")
        restored = type(model).load_from_checkpoint(tmp_path / "m.ckpt")
        frames = torch.randint(0, 256, (2, 4, 48, 64, 3), dtype=torch.uint8, generator=g)
        expected = model.score_windows(frames).p_anomaly
        assert torch.equal(restored.score_windows(frames).p_anomaly, expected)
        if any(p.requires_grad for p in model.parameters()):
            assert not torch.equal(self.make_model(frames_per_window=4).score_windows(frames).p_anomaly, expected)


class TestFrozen(MethodContract):
    def make_model(self, **kwargs):
        return FrozenVLM(**kwargs)

    def test_declares_nothing_to_train(self):
        model = self.make_model()
        assert model.trainer_arguments["max_epochs"] == 0
        assert model.parameter_counts()["params_trainable"] == 0


class MeanIntensity(BenchModule):
    """A transparent scorer: the mean pixel value of the window, for checking the shared test loop by hand."""

    method_name = "mean_intensity"

    def score_windows(self, frames: torch.Tensor) -> ScoreOutput:
        score = frames.float().mean(dim=(1, 2, 3, 4)) / 255.0
        return ScoreOutput(p_anomaly=score, logit_margin=torch.logit(score), features=None)


def test_test_loop_equals_a_hand_computed_reference(small_world):
    dm = SyntheticUCFCrimeDataModule(domain="A", **{**small_world, "batch_size": 3})
    model = MeanIntensity(keep_features=False, frames_per_window=dm.frames_per_window)
    _trainer().test(model, datamodule=dm, verbose=False)
    result = model.test_results["synth_ucf_A"]
    all_scores, all_gt = [], []
    for record, video in zip(dm.test_sets[0].records, result.videos, strict=True):
        indices = window_frame_indices(record.num_frames, fps=record.fps, spec=dm.window_spec)
        window_scores = [read_frames(record.path, w).astype(np.float64).mean() / 255.0 for w in indices]
        frames = np.empty(record.num_frames)
        for i, s in enumerate(window_scores):  # window i covers [16 i, 16 (i + 1)), the last one to the end
            frames[16 * i:16 * (i + 1)] = s
        np.testing.assert_allclose(video.frame_scores, frames, atol=1e-6)
        all_scores.append(frames)
        all_gt.append(record.gt)
    scores, gt = np.concatenate(all_scores), np.concatenate(all_gt)
    assert abs(result.metrics.auc - roc_auc_score(gt, scores)) < 1e-6
    assert abs(result.metrics.ap - average_precision_score(gt, scores)) < 1e-6
    assert result.metrics.num_frames == gt.size and result.metrics.num_anomalous_frames == gt.sum()


class NightIsBroken(MeanIntensity):
    """Produces NaN scores on dark frames: domain B (night street) fails, domain A (sunny plaza) does not."""

    def score_windows(self, frames: torch.Tensor) -> ScoreOutput:
        out = super().score_windows(frames)
        out.p_anomaly[out.p_anomaly < 0.35] = float("nan")
        return out


def test_a_failing_test_set_does_not_lose_the_others(small_world, tmp_path):
    from copra_bench.datamodules import CrossDomainDataModule
    from copra_bench.errors import EvaluationError
    from copra_bench.tracking import RunArtifacts

    args = {k: small_world[k] for k in ("window_seconds", "frames_per_window", "batch_size", "val_fraction")}
    world = {k: v for k, v in small_world.items() if k not in args}
    dm = CrossDomainDataModule(SyntheticUCFCrimeDataModule(domain="A", **world),
                               SyntheticUCFCrimeDataModule(domain="B", **world), frame_size=None, **args)
    model = NightIsBroken(keep_features=False)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        default_root_dir=str(tmp_path), callbacks=[RunArtifacts()])
    with pytest.raises(EvaluationError, match="synth_ucf_B: NaN or inf scores"):
        trainer.test(model, datamodule=dm, verbose=False)
    assert set(model.test_results) == {"synth_ucf_A"}
    saved = list(tmp_path.rglob("scores/*.npz"))
    assert [p.name for p in saved] == ["synth_ucf_A.npz"]
    assert (saved[0].parent.parent / "metrics.json").is_file()


class WithHead(MeanIntensity):
    """A method with one trained tensor, to check what checkpoints hold."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.head = torch.nn.Linear(2, 1)


def test_checkpoint_roundtrip_keeps_trained_and_refuses_foreign(tmp_path):
    model = WithHead(keep_features=False)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, max_epochs=0,
                        default_root_dir=str(tmp_path))
    trainer.strategy.connect(model)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)
    assert set(saved["state_dict"]) == {"head.weight", "head.bias"}
    assert path.stat().st_size < 100_000, "the frozen backbone must not be in the checkpoint"
    fresh = WithHead.load_from_checkpoint(path)
    torch.testing.assert_close(fresh.head.weight, model.head.weight)
    foreign = {"state_dict": {}, "frozen_backbone": "tiny-qwen2-vl"}
    from copra_bench.errors import CopraError
    with pytest.raises(CopraError, match="lacks 2 trained tensors"):
        fresh.on_load_checkpoint(foreign)
