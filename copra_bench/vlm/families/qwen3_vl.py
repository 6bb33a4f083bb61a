"""Qwen3-VL: ViT (patch 16) + merger with deepstack features, Qwen3 LM with interleaved M-RoPE.

Its LM also reads deepstack features from intermediate vision layers, which ``pooler_output`` alone does not carry:
precomputed vision outputs are not reused (the encoder runs again where an adaptation is conditioned on it).
"""

from __future__ import annotations

from ..tiny import build_tiny_qwen, text_config
from .qwen2_vl import register_qwen_family


def _tiny_text_config(tokenizer) -> dict:
    text = text_config(tokenizer)
    text.update(head_dim=16)
    text["rope_parameters"] = dict(text["rope_parameters"], mrope_interleaved=True)
    return text


def build_tiny(seed: int = 0, attn_implementation: str | None = None):
    """Tiny ``Qwen3VLForConditionalGeneration`` (patch 16, deepstack) + real ``Qwen3VLProcessor``."""
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    vision = dict(depth=2, hidden_size=64, intermediate_size=128, out_hidden_size=64, num_heads=2, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64, deepstack_visual_indexes=[1])
    common = dict(patch_size=16, temporal_patch_size=2, merge_size=2)
    image_processor = Qwen2VLImageProcessor(min_pixels=32 * 32, max_pixels=64 * 64, **common)
    # Qwen3-VL's video pixel budget counts all frames: 8 frames of 64x64 keep their size (16 tokens).
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": 8 * 32 * 32, "longest_edge": 8 * 64 * 64}, do_sample_frames=False, **common
    )
    return build_tiny_qwen((Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor), vision, seed,
                           attn_implementation, text_config_of=_tiny_text_config,
                           media_processors=(image_processor, video_processor))


FAMILY = register_qwen_family(model_type="qwen3_vl", name="Qwen3-VL", example="Qwen/Qwen3-VL-8B-Instruct",
                              vision_dim_of=lambda config: config.vision_config.out_hidden_size,
                              tiny_model="tiny-qwen3-vl", build_tiny=build_tiny)
