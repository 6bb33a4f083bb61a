"""The static-adapter protocol (:mod:`copra_bench.adapters`) shared by prompt tuning, LoRA SFT and static GRPO:
one plumbing for scoring, training tensors, export, counts and merging, and checkpoint keys that do not move."""

from __future__ import annotations

from pathlib import Path

import pytest

from copra_bench.adapters import AdaptedMethod, MergedForTest, StaticAdapter, StaticLoRA
from copra_bench.baselines import LoRASFT, PromptTuning, StaticLoRAGRPO
from copra_bench.errors import CopraError

from .test_baselines import GRPO, LORA


def test_both_static_adapters_follow_one_protocol():
    soft, lora = PromptTuning(num_virtual_tokens=2), LoRASFT(**LORA)
    grpo = StaticLoRAGRPO(**LORA, **GRPO)
    assert isinstance(soft.adapter, StaticAdapter) and isinstance(lora.adapter, StaticLoRA)
    assert all(isinstance(m, AdaptedMethod) for m in (soft, lora, grpo))
    assert isinstance(lora, MergedForTest) and isinstance(grpo, MergedForTest) and not isinstance(soft, MergedForTest)
    for model in (soft, lora, grpo):
        params = model.trainable_parameters()
        assert params and all(p.requires_grad for p in params)
        # the optimiser's tensors, in a fixed order, are exactly what requires grad in the method
        assert [id(p) for p in params] == [id(p) for p in model.adapter.parameters() if p.requires_grad]
        assert model.parameter_counts()[model.adapter.count_name] == model.adapter.num_values()
    assert lora.adapter.mergeable and not soft.adapter.mergeable
    with pytest.raises(CopraError, match="cannot be merged"):
        soft.adapter.merge()


def test_checkpoint_keys_of_the_static_methods_are_stable():
    """Resumed runs load these keys: the adapter refactor must not rename them."""
    def keys(model):
        checkpoint = {"state_dict": model.state_dict()}
        model.on_save_checkpoint(checkpoint)
        return set(checkpoint["state_dict"])

    assert keys(PromptTuning(num_virtual_tokens=2)) == {"adapter.embeddings"}
    lora = {f"{owner}{path}.layers.1.self_attn.q_proj.lora_{m}.default.weight"
            for owner in ("", "adapter.") for path in ("backbone._language", "backbone.model.model.language_model")
            for m in "AB"}
    assert keys(LoRASFT(**LORA, target_modules=["q"], layers=[-1])) == lora
    assert keys(StaticLoRAGRPO(**LORA, **GRPO, target_modules=["q"], layers=[-1])) == lora


def test_the_baselines_import_nothing_from_copra():
    import ast

    folder = Path(__file__).resolve().parents[1] / "baselines"
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            assert not any(n == "copra_bench.copra" or n.startswith("copra_bench.copra.") for n in names), path
