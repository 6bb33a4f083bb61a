"""The static baselines: prompt tuning (with correct M-RoPE positions), LoRA SFT and static LoRA + GRPO.

Each runs the shared :class:`~tests.test_methods.MethodContract` (fit, test, predict on tiny synthetic data); the
tests below check what is particular to each: that the LoRA sits exactly on COPRA's modules and is merged at test
time, that the GRPO control is COPRA's GRPO, the configs, and config-time errors. Prompt tuning's own checks (the
positions behind a soft prompt, its gradient and export) are in test_prompt_tuning.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from copra_bench.baselines import FrozenVLM, LoRASFT, PromptTuning, StaticLoRAGRPO
from copra_bench.datamodules import SyntheticUCFCrimeDataModule

from copra_bench.copra import COPRA, mapping_for
from copra_bench.errors import CopraError
from copra_bench.rl import TrainingError
from copra_bench.vlm import VLMBackbone

from .test_methods import MethodContract, _trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
LORA = dict(rank=2, alpha=4.0)
GRPO = dict(rollout_mode="constrained", num_generations=4, beta=0.04)


def _clips(*sizes: tuple[int, int], frames: int = 4, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (frames, h, w, 3), dtype=torch.uint8, generator=g) for h, w in sizes]


def _randomise(params) -> None:
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.3)


# ------------------------------------------------------------------------------------------ the shared contract
class TestPromptTuning(MethodContract):
    def make_model(self, **kwargs):
        return PromptTuning(num_virtual_tokens=4, lr=1e-2, **kwargs)

    def test_logs_its_size(self):
        counts = self.make_model().parameter_counts()
        assert counts["params_trainable"] == counts["soft_prompt_values"] == 4 * 64


class TestLoRASFT(MethodContract):
    def make_model(self, **kwargs):
        return LoRASFT(**LORA, lr=1e-2, **kwargs)

    def test_starts_from_the_frozen_model_exactly(self):
        frames = torch.stack(_clips((48, 64), (48, 64)))
        assert torch.equal(self.make_model(frames_per_window=4).score_windows(frames).p_anomaly,
                           FrozenVLM(frames_per_window=4).score_windows(frames).p_anomaly)

    def test_logs_its_size(self):
        counts = self.make_model().parameter_counts()
        assert counts["params_trainable"] == counts["lora_values"] > 0


class TestStaticLoRAGRPO(MethodContract):
    def make_model(self, **kwargs):
        return StaticLoRAGRPO(**LORA, **GRPO, lr=1e-2, **kwargs)


# ------------------------------------------------------------------------------------------------ static LoRA
def test_lora_sits_on_exactly_copras_modules_and_only_the_language_model():
    model = LoRASFT(rank=2, target_modules=["q", "v", "down"], layers=[-1])
    backbone = model.backbone
    mapping = mapping_for(backbone)
    layer = mapping.decoder_layers(backbone)[-1]
    expected = {id(layer.get_submodule(mapping.targets[t])) for t in ("q", "v", "down")}
    adapted = {id(m) for n, m in backbone.model.named_modules() if n in model.adapter.target_names}
    assert adapted == expected
    assert all(".language_model." in n and "visual" not in n for n in model.adapter.target_names)


def test_lora_is_merged_for_test_and_scores_the_same(small_world):
    dm = SyntheticUCFCrimeDataModule(domain="A", **small_world)
    model = LoRASFT(**LORA, frames_per_window=dm.frames_per_window)
    _randomise(model.adapter.lora_parameters())
    frames = torch.stack(_clips((48, 64), (48, 64), (48, 64)))
    unmerged = model.score_windows(frames).p_anomaly
    lora_calls: list[int] = []
    handles = [layer.lora_A["default"].register_forward_hook(lambda *_: lora_calls.append(1))
               for layer in model.adapter._layers]
    model.adapter.merge()
    model.backbone.score(frames)  # a forward outside the adaptation must not silently unmerge it
    merged = model.score_windows(frames).p_anomaly
    assert model.adapter.merged
    model.adapter.unmerge()
    assert not lora_calls, "a merged LoRA must not run its low-rank path"
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)
    assert not torch.allclose(unmerged, FrozenVLM(frames_per_window=4).score_windows(frames).p_anomaly)
    trainer = _trainer()
    trainer.test(model, datamodule=dm, verbose=False)
    assert not lora_calls, "test ran the unmerged LoRA"
    assert not model.adapter.merged, "the LoRA must be unmerged after test"
    model.score_windows(frames)
    assert lora_calls, "after test the LoRA runs unmerged again"
    for h in handles:
        h.remove()
    # merge + unmerge restores the base weights to float rounding
    base = [layer.base_layer.weight for layer in model.adapter._layers]
    reference = LoRASFT(**LORA, frames_per_window=4).adapter._layers
    for weight, ref in zip(base, reference, strict=True):
        torch.testing.assert_close(weight, ref.base_layer.weight, atol=1e-6, rtol=0)


def test_lora_rejects_unknown_targets_and_layers():
    with pytest.raises(CopraError, match="unknown LoRA targets \\['qkv'\\]"):
        LoRASFT(target_modules=["qkv"])
    with pytest.raises(CopraError, match="out of range"):
        LoRASFT(layers=[7])
    with pytest.raises(CopraError, match="model.layers is empty"):
        StaticLoRAGRPO(layers=[])


def test_supervised_nan_stops_before_the_optimiser_step(small_world):
    dm = SyntheticUCFCrimeDataModule(domain="A", **small_world)
    model = LoRASFT(**LORA, frames_per_window=dm.frames_per_window)
    with torch.no_grad():
        model.adapter.lora_parameters()[1].fill_(float("nan"))  # lora_B of the first layer
    with pytest.raises(TrainingError, match=r"non-finite loss at global step 0 \(inputs: \w+_x264, "):
        _trainer(max_steps=1, num_sanity_val_steps=0, limit_val_batches=0).fit(model, datamodule=dm)


# ---------------------------------------------------------------------------------------------- static GRPO
def test_static_grpo_trains_the_shared_lora_and_keeps_the_reference_frozen(small_world):
    dm = SyntheticUCFCrimeDataModule(domain="A", **small_world)
    model = StaticLoRAGRPO(**LORA, **GRPO, lr=1e-2, frames_per_window=dm.frames_per_window)
    before = [p.detach().clone() for p in model.adapter.lora_parameters()]
    _trainer(max_steps=2, num_sanity_val_steps=0, limit_val_batches=0).fit(model, datamodule=dm)
    changed = [not torch.equal(a, p) for a, p in zip(before, model.adapter.lora_parameters(), strict=True)]
    assert any(changed), "GRPO did not update the LoRA"
    # Outside the adaptation the backbone is the frozen reference of the KL term.
    frames = torch.stack(_clips((48, 64), (48, 64)))
    assert torch.equal(model.backbone.score(frames).p_anomaly,
                       FrozenVLM(frames_per_window=4).score_windows(frames).p_anomaly)
    assert not torch.equal(model.score_windows(frames).p_anomaly, model.backbone.score(frames).p_anomaly)


def test_static_grpo_uses_copras_grpo_settings():
    settings = dict(GRPO, num_generations=6, beta=0.07, epsilon=0.3, loss_type="bnpo", temperature=0.9)
    static = StaticLoRAGRPO(**LORA, **settings)
    copra = COPRA(rank=2, generator_depth=1, generator_width=32, generator_heads=2, segment_size=16, **settings)
    assert static.grpo_config == copra.grpo_config
    assert static.engine.rewards == copra.engine.rewards and static.engine.reward_weights == copra.engine.reward_weights


@pytest.mark.parametrize("backbone", ["tiny", "qwen2vl_7b", "internvl3_8b"])
def test_the_grpo_control_config_matches_copras(backbone):
    """The Table 3 control must differ from COPRA only in the conditioning: same GRPO, rank, targets, lr."""
    def args(name):
        return yaml.safe_load((CONFIGS / "model" / f"{name}_{backbone}.yaml").read_text())["init_args"]

    copra, static = args("copra"), args("lora_grpo")
    shared = ("backbone", "backbone_dtype", "rank", "alpha", "target_modules", "rollout_mode", "num_generations",
              "temperature", "max_completion_length", "beta", "epsilon", "loss_type", "lr", "epochs", "grad_clip")
    for key in shared:
        assert copra.get(key) == static.get(key), key


# ------------------------------------------------------------------------------------------------ config family
METHOD_CLASSES = {"frozen": "copra_bench.baselines.FrozenVLM", "prompt_tuning": "copra_bench.baselines.PromptTuning",
                  "lora_sft": "copra_bench.baselines.LoRASFT", "lora_grpo": "copra_bench.baselines.StaticLoRAGRPO",
                  "copra": "copra_bench.copra.COPRA"}


@pytest.mark.parametrize("method", sorted(METHOD_CLASSES))
def test_every_method_has_a_config_per_dataset_and_in_the_cross_domain_family(method):
    folder = CONFIGS / "experiment" / "methods" / method
    cells = sorted(p.stem for p in folder.glob("*.yaml"))
    assert cells == sorted(["ucf_crime", "xd_violence", "shanghaitech", "ucf_crime_to_xd_violence",
                            "synthetic_cross_domain"])
    main_job = yaml.safe_load((CONFIGS / "cross_domain.yaml").read_text())
    for cell in cells:
        config = yaml.safe_load((folder / f"{cell}.yaml").read_text())
        model = yaml.safe_load((folder / config["model"]).resolve().read_text())
        assert model["class_path"] == METHOD_CLASSES[method]
        data = (folder / config["data"]).resolve()
        assert data.is_file()
        if cell == "synthetic_cross_domain":
            assert data == (CONFIGS / main_job["data"]).resolve()
    for backbone in ("tiny", "qwen2vl_7b", "internvl3_8b"):
        assert (CONFIGS / "model" / f"{method}_{backbone}.yaml").is_file()


def test_a_method_config_runs_from_the_command_line(capsys):
    from copra_bench.cli import main

    with pytest.raises(SystemExit):
        main(["fit", "--config", str(CONFIGS / "experiment" / "methods" / "prompt_tuning" / "ucf_crime.yaml"),
              "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == METHOD_CLASSES["prompt_tuning"]
    assert printed["model"]["init_args"]["num_virtual_tokens"] == 20
    assert printed["data"]["class_path"] == "copra_bench.datamodules.UCFCrimeDataModule"


@pytest.mark.parametrize(("model", "option", "value", "message"), [
    ("prompt_tuning_tiny", "num_virtual_tokens", "0", "num_virtual_tokens must be >= 1"),
    ("lora_sft_tiny", "target_modules", "[q, qkv]", "unknown LoRA targets ['qkv']"),
    ("lora_grpo_tiny", "loss_type", "ppo", "loss_type"),
    ("lora_sft_tiny", "lr", "1e999", "model.lr must be a finite number > 0, got inf"),
    ("copra_tiny", "lr", "1e999", "model.lr must be a finite number > 0, got inf"),
    ("prompt_tuning_tiny", "lr", "-0.001", "model.lr must be a finite number > 0"),
    ("lora_sft_tiny", "grad_clip", "1e999", "model.grad_clip and model.weight_decay must be finite"),
])
def test_incompatible_options_fail_before_anything_runs(tmp_path, monkeypatch, capsys, model, option, value, message):
    from copra_bench.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["fit", "--config", str(CONFIGS / "cross_domain.yaml"), "--model", str(CONFIGS / "model" / f"{model}.yaml"),
                 f"--model.init_args.{option}", value])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err[-2000:]
    assert not (tmp_path / "outputs").exists(), "nothing may run before the options are checked"


def test_trained_lora_is_exported_as_a_peft_adapter(tmp_path):
    """The run's trained/ folder loads with plain peft on the same checkpoint and scores like the method."""
    from peft import PeftModel

    model = LoRASFT(**LORA, target_modules=["q", "v", "down"])
    _randomise(model.adapter.lora_parameters())
    frames = torch.stack(_clips((48, 64), (48, 64), seed=5))
    expected = model.score_windows(frames).p_anomaly
    path = model.export_trained(tmp_path / "trained")
    fresh = VLMBackbone.load("tiny-qwen2-vl")
    assert not torch.allclose(fresh.score(frames).p_anomaly, expected)
    PeftModel.from_pretrained(fresh.model, str(path))  # adapts fresh.model's modules in place
    torch.testing.assert_close(fresh.score(frames).p_anomaly, expected, atol=1e-6, rtol=0)


@pytest.mark.gpu
def test_cuda_bf16_static_adaptations_train_and_merge():
    """bf16 backbone on CUDA: float32 LoRA / soft prompt get gradients, and the merged LoRA scores like the
    unmerged one (to bf16 rounding)."""
    frames = torch.stack(_clips((48, 64), (48, 64), seed=9))
    model = LoRASFT(**LORA, backbone_dtype="bfloat16").to("cuda")
    _randomise(model.adapter.lora_parameters())
    assert all(p.dtype == torch.float32 and p.is_cuda for p in model.adapter.lora_parameters())
    with model.adapter.adaptation(1):
        logits = model.backbone.answer_logits(frames, grad=True)
    model.answer_loss_of(logits, torch.tensor([0, 1]))[0].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.adapter.lora_parameters())
    unmerged = model.score_windows(frames).p_anomaly
    model.adapter.merge()
    torch.testing.assert_close(model.score_windows(frames).p_anomaly, unmerged, atol=2e-2, rtol=0)
    prompt = PromptTuning(num_virtual_tokens=4, backbone_dtype="bfloat16").to("cuda")
    with prompt.adapter.adaptation(1):
        logits = prompt.backbone.answer_logits(frames, grad=True)
    prompt.answer_loss_of(logits, torch.tensor([0, 1]))[0].backward()
    assert prompt.adapter.embeddings.grad is not None and prompt.adapter.embeddings.dtype == torch.float32


@pytest.mark.slow
@pytest.mark.parametrize(("model", "counts"), [("lora_sft_tiny", ("lora_values",)),
                                                ("prompt_tuning_tiny", ("soft_prompt_values",))])
def test_a_baseline_run_logs_its_size_and_exports_what_it_learned(tmp_path, monkeypatch, synth_cache, model, counts):
    import sqlite3

    from copra_bench.cli import main

    from .test_cli import MAIN, _small_data_config

    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", MAIN, "--data", _small_data_config(tmp_path, synth_cache),
                 "--model", str(CONFIGS / "model" / f"{model}.yaml"), "--model.init_args.epochs", "1"]) == 0
    db = sqlite3.connect(tmp_path / "mlflow.db")
    (run_id, name, status), = db.execute("select run_uuid, name, status from runs").fetchall()
    assert status == "FINISHED" and name.startswith(model.removesuffix("_tiny"))
    params = dict(db.execute("select key, value from params where run_uuid=?", (run_id,)).fetchall())
    assert int(params["model.params_total"]) > int(params["model.params_trainable"]) > 0
    assert all(int(params[f"model.{key}"]) == int(params["model.params_trainable"]) for key in counts)
    artifacts = Path(db.execute("select artifact_uri from runs").fetchone()[0].replace("file://", ""))
    exported = sorted(p.name for p in (artifacts / "trained").iterdir())
    assert exported == (["adapter_config.json", "adapter_model.safetensors"] if "lora" in model
                        else ["soft_prompt.json", "soft_prompt.safetensors"])
    assert (artifacts / "metrics.json").is_file()
