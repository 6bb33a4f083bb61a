"""Qwen2.5-VL: windowed-attention ViT + patch merger, Qwen2 LM with M-RoPE (absolute temporal positions)."""

from __future__ import annotations

from ..tiny import tiny_qwen_builder
from .qwen2_vl import register_qwen_family


# out_hidden_size is the merger output (= text hidden size)
build_tiny = tiny_qwen_builder(
    ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
    dict(depth=2, hidden_size=64, intermediate_size=128, out_hidden_size=64, num_heads=2, patch_size=14,
         spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1], tokens_per_second=2))

FAMILY = register_qwen_family(model_type="qwen2_5_vl", name="Qwen2.5-VL", example="Qwen/Qwen2.5-VL-7B-Instruct",
                              vision_dim_of=lambda config: config.vision_config.out_hidden_size,
                              reuses_vision_outputs=True, tiny_model="tiny-qwen2.5-vl", build_tiny=build_tiny)
