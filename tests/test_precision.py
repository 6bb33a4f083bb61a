"""Precision: settings that cannot train are refused from the config, before the backbone loads, naming the key and
the fix; COPRA's generator keeps float32 weights and LoRA values and computes in bf16 autocast on a bf16 backbone."""

from __future__ import annotations

import pytest
import torch

from copra_bench.cli import main
from copra_bench.copra.torch_model import COPRAModel
from copra_bench.precision import PrecisionError, check_precision, check_training_precision
from copra_bench.vlm import VLMBackbone


@pytest.mark.parametrize("precision", ["bf16-true", "16-true", "transformer-engine"])
def test_sixteen_bit_master_weights_are_refused(precision):
    with pytest.raises(PrecisionError, match=rf"trainer.precision={precision} .*set trainer.precision: bf16-mixed"):
        check_training_precision(precision, "bfloat16")


@pytest.mark.parametrize("precision", ["16-mixed", "16"])
def test_fp16_with_a_scaler_is_refused(precision):
    with pytest.raises(PrecisionError, match="loss scaler.*non-finite guard"):
        check_training_precision(precision, "bfloat16")


def test_an_fp16_backbone_is_refused_for_training():
    with pytest.raises(PrecisionError, match="model.init_args.backbone_dtype=float16.*backbone_dtype: bfloat16"):
        check_training_precision("32-true", "float16")


@pytest.mark.parametrize("precision", [None, "32-true", "bf16-mixed", "bf16"])
def test_the_recipes_that_train_pass(precision):
    check_training_precision(precision, "bfloat16")
    check_training_precision(precision, "float32")


def test_the_cli_refuses_before_the_backbone_loads(capsys, monkeypatch, tmp_path):
    # a 7B config whose checkpoint does not exist: had the backbone started loading, the error would be the path's
    monkeypatch.chdir(tmp_path)
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "configs"
    code = main(["fit", "--config", str(configs / "in_domain_synthetic.yaml"), "--model",
                 str(configs / "model" / "copra_qwen2vl_7b.yaml"), "--model.init_args.backbone",
                 str(tmp_path / "missing"), "--trainer.precision", "bf16-true"])
    assert code == 2
    assert "trainer.precision=bf16-true" in capsys.readouterr().err
    # the frozen baseline trains nothing: any precision may score it; test never trains
    frozen = {"model": {"class_path": "copra_bench.baselines.FrozenVLM"}, "trainer": {"precision": "bf16-true"}}
    check_precision("fit", frozen)
    copra = {"model": {"class_path": "copra_bench.copra.COPRA", "init_args": {"backbone_dtype": "bfloat16"}},
             "trainer": {"precision": "bf16-true"}}
    check_precision("test", copra)
    with pytest.raises(PrecisionError):
        check_precision("fit", copra)


def test_the_generator_computes_in_bf16_and_writes_float32_values():
    backbone = VLMBackbone.load("tiny-qwen2-vl", dtype="bfloat16")
    model = COPRAModel(backbone, rank=2, width=32, depth=1, heads=2, segment_size=16)
    seen: list[torch.dtype] = []
    model.generator.blocks[0].mlp.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    frames = torch.randint(0, 256, (2, 4, 48, 64, 3), dtype=torch.uint8)
    deltas = model.generator(model.condition_tokens(frames))
    assert seen == [torch.bfloat16]
    assert all(t.dtype == torch.float32 for t in [*deltas.A.values(), *deltas.B.values()])
    sum(t.sum() for t in deltas.A.values()).backward()
    assert all(p.dtype == torch.float32 for p in model.generator.parameters())
    assert model.generator.head_a[1].weight.grad.dtype == torch.float32
    scores = model.score_self_conditioned(frames)
    assert scores.p_anomaly.dtype == torch.float32 and torch.isfinite(scores.p_anomaly).all()
    assert COPRAModel(VLMBackbone.load("tiny-qwen2-vl"), rank=2, width=32, depth=1, heads=2,
                      segment_size=16).generator.autocast_dtype is None  # float32 backbone: unchanged
