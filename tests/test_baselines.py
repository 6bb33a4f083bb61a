"""The static baselines: prompt tuning (with correct M-RoPE positions), LoRA SFT and static LoRA + GRPO.

Each runs the shared :class:`~tests.test_methods.MethodContract` (fit, test, predict on tiny synthetic data); the
tests below check what is particular to each: the positions behind a soft prompt, that the LoRA sits exactly on
COPRA's modules and is merged at test time, that the GRPO control is COPRA's GRPO, and config-time errors.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from copra_bench.baselines import FrozenVLM, LoRASFT, PromptTuning, StaticLoRAGRPO
from copra_bench.baselines.prompt_tuning import PromptTuningError, SoftPrompt
from copra_bench.datamodules import SyntheticUCFCrimeDataModule

from copra_bench.copra import COPRA, mapping_for
from copra_bench.errors import CopraError
from copra_bench.rl import TrainingError
from copra_bench.vlm import VLMBackbone, family_of
from copra_bench.vlm.families import PositionScheme, registry

from .test_methods import MethodContract, _checksum, _trainer

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


# ------------------------------------------------------------------------------------------------ prompt tuning
def _positions_seen_by_the_language_model(backbone: VLMBackbone, clips, adapter=None) -> tuple:
    """The position ids the LM's rotary embedding receives (``[3, B, L]`` for M-RoPE, ``[B, L]`` for 1-D)."""
    seen: list = []
    rotary = backbone.language_model.rotary_emb
    handle = rotary.register_forward_pre_hook(lambda _m, args: seen.append(args[1]))
    try:
        if adapter is None:
            backbone.score(clips)
        else:
            adapter(clips)
    finally:
        handle.remove()
    (positions,) = seen
    return positions, backbone.prepare_inputs(clips, with_answer_prefix=True)["attention_mask"]


@pytest.mark.parametrize("name", ["tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-internvl"])
def test_soft_prompt_keeps_the_video_positions(name):
    """Positions with the soft prompt = positions without it shifted by n; the virtual tokens get 0..n-1."""
    backbone = VLMBackbone.load(name)
    n = 3
    # Different frame sizes give different numbers of vision tokens, so rows are left-padded differently.
    sizes = ((48, 64), (96, 112)) if backbone.family != "internvl" else ((64, 64), (64, 64))
    clips = _clips(*sizes)
    plain, mask = _positions_seen_by_the_language_model(backbone, clips)
    prompted, _ = _positions_seen_by_the_language_model(backbone, clips, SoftPrompt(backbone, num_virtual_tokens=n))
    # As [axes, B, L]: 1-D families pass [1 or B, L] (InternVL: one arange broadcast over the batch).
    plain, prompted = (p.unsqueeze(0) if p.dim() == 2 else p for p in (plain, prompted))
    plain, prompted = (p.expand(-1, len(clips), -1) for p in (plain, prompted))
    axes = plain.shape[0]
    assert prompted.shape[-1] == plain.shape[-1] + n
    if backbone.family != "internvl":
        assert mask[0].sum() != mask[1].sum(), "the test needs rows with different padding"
    for row in range(len(clips)):
        start = int(mask[row].long().argmax())
        real = plain[..., row, start:]
        virtual = prompted[..., row, start:start + n]
        after = prompted[..., row, start + n:]
        expected_virtual = torch.arange(n).expand(axes, n)
        assert torch.equal(virtual[-axes:], expected_virtual[-axes:]), virtual
        assert torch.equal(after[-axes:], real[-axes:] + n)
        if axes >= 3:  # M-RoPE: the video is not flat (height/width differ from temporal) in both cases
            assert not torch.equal(real[-3], real[-2]) and not torch.equal(after[-3], after[-2])


def test_soft_prompt_changes_the_score_and_trains(small_world):
    dm = SyntheticUCFCrimeDataModule(domain="A", **small_world)
    model = PromptTuning(num_virtual_tokens=4, lr=5e-2, frames_per_window=dm.frames_per_window)
    before = model.adapter.embeddings.detach().clone()
    frozen = _checksum(model.backbone)
    _trainer(max_steps=2, num_sanity_val_steps=0, limit_val_batches=0).fit(model, datamodule=dm)
    assert not torch.equal(before, model.adapter.embeddings), "the soft prompt was not updated"
    assert _checksum(model.backbone) == frozen


def test_soft_prompt_from_text_uses_its_token_embeddings():
    backbone = VLMBackbone.load("tiny-qwen2-vl")
    prompt = SoftPrompt(backbone, num_virtual_tokens=5, init_text="abnormal")
    ids = backbone.tokenizer.encode("abnormal", add_special_tokens=False)
    ids = (ids * 5)[:5]
    torch.testing.assert_close(prompt.embeddings.detach(), backbone.model.get_input_embeddings().weight[ids])


def _with_positions(monkeypatch, positions) -> None:
    """Register Qwen2-VL again with another position scheme (the backbone reads it when it is built)."""
    monkeypatch.setitem(registry._REGISTRY, "qwen2_vl",
                        dataclasses.replace(family_of("qwen2_vl"), positions=positions))


def test_prompt_tuning_on_a_family_without_a_position_scheme_fails_at_construction(monkeypatch):
    _with_positions(monkeypatch, None)
    with pytest.raises(PromptTuningError, match="does not know how the 'qwen2_vl' family computes token positions"):
        PromptTuning()


def test_prompt_tuning_without_the_rope_index_function_fails_at_construction(monkeypatch):
    _with_positions(monkeypatch, PositionScheme("M-RoPE", "no_such_rope_function"))
    with pytest.raises(PromptTuningError, match="no no_such_rope_function"):
        PromptTuning()


def test_prompt_tuning_rejects_zero_tokens():
    with pytest.raises(PromptTuningError, match="num_virtual_tokens must be >= 1"):
        PromptTuning(num_virtual_tokens=0)


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
])
def test_incompatible_options_fail_before_anything_runs(tmp_path, monkeypatch, capsys, model, option, value, message):
    from copra_bench.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["fit", "--config", str(CONFIGS / "cross_domain.yaml"), "--model", str(CONFIGS / "model" / f"{model}.yaml"),
                 f"--model.init_args.{option}", value])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err[-2000:]
    assert not (tmp_path / "outputs").exists(), "nothing may run before the options are checked"


def test_soft_prompt_gradient_matches_finite_differences():
    """The gradient reaching the soft prompt through the embedding hook is the true one (not merely non-zero)."""
    model = PromptTuning(num_virtual_tokens=3, backbone_dtype="float32", answer_loss="binary")
    frames = torch.stack(_clips((48, 64), (48, 64), seed=3))
    labels = torch.tensor([0, 1])

    def loss() -> torch.Tensor:
        with model.adapter.adaptation(1):
            logits = model.backbone.answer_logits(frames, grad=True)
        id0, id1 = model.backbone.answer_token_ids
        return torch.nn.functional.cross_entropy(torch.stack((logits[:, id0], logits[:, id1]), dim=-1), labels)

    model.adapter.embeddings.data = model.adapter.embeddings.data.double()
    model.backbone.model.double()
    value = loss()
    (grad,) = torch.autograd.grad(value, [model.adapter.embeddings])
    direction = torch.randn_like(grad, generator=torch.Generator().manual_seed(0))
    eps = 1e-3  # the model's RMSNorm computes in float32 even in a float64 model: a smaller step drowns in it
    with torch.no_grad():
        model.adapter.embeddings += eps * direction
        plus = loss()
        model.adapter.embeddings -= 2 * eps * direction
        minus = loss()
    numeric = (plus - minus) / (2 * eps)
    assert value.dtype == torch.float64
    assert abs(numeric - (grad * direction).sum()) < 1e-3 * abs(float(numeric))
    assert abs(float(numeric)) > 1e-8, "the soft prompt has no effect on the loss"


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


def test_trained_soft_prompt_is_exported(tmp_path):
    from safetensors.torch import load_file

    model = PromptTuning(num_virtual_tokens=3)
    path = model.export_trained(tmp_path / "trained")
    torch.testing.assert_close(load_file(str(path / "soft_prompt.safetensors"))["embeddings"],
                               model.adapter.embeddings.detach())
    assert '"num_virtual_tokens": 3' in (path / "soft_prompt.json").read_text()


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


def test_soft_prompt_without_spare_embedding_rows_uses_a_token_absent_from_the_prompt():
    backbone = VLMBackbone.load("tiny-qwen2-vl")
    clips = _clips((48, 64), (96, 112))
    spare = SoftPrompt(backbone, num_virtual_tokens=3)
    assert spare.placeholder_id == len(backbone.tokenizer)  # a row no text maps to
    with spare.adaptation():
        with_spare_row = backbone.score(clips).p_anomaly
    backbone.model.resize_token_embeddings(len(backbone.tokenizer))  # no row left beyond the tokenizer's
    prompt = SoftPrompt(backbone, num_virtual_tokens=3)
    prompt.embeddings.data.copy_(spare.embeddings.data)
    prompt_ids = set(backbone.prepare_inputs(clips, with_answer_prefix=True)["input_ids"].flatten().tolist())
    assert prompt.placeholder_id < len(backbone.tokenizer) and prompt.placeholder_id not in prompt_ids
    assert prompt.placeholder_id not in backbone.tokenizer.all_special_ids
    with prompt.adaptation():
        scores = backbone.score(clips).p_anomaly
    # the placeholder's own embedding row is never read: the same soft prompt gives the same scores
    torch.testing.assert_close(scores, with_spare_row, atol=1e-6, rtol=0)

