"""Qwen2-VL: ViT + patch merger, Qwen2 LM with M-RoPE; the merger's ``pooler_output`` is the vision tokens."""

from __future__ import annotations

from ..tiny import tiny_qwen_builder
from .registry import PositionScheme, VLMFamily, register_family

#: Qwen2-VL, Qwen2.5-VL and Qwen3-VL: the visual module is both the encoder and, its ``pooler_output`` being the
#: merged (post-merger) token sequence, the vision-token output; positions are M-RoPE.
QWEN_VISUAL = ("model.visual", "visual")
QWEN_MROPE = PositionScheme("M-RoPE from input_ids and mm_token_type_ids (get_rope_index)", "get_rope_index")


def register_qwen_family(**facts) -> VLMFamily:
    """Register a Qwen-VL family: :data:`QWEN_VISUAL` and :data:`QWEN_MROPE` plus its own ``facts``."""
    return register_family(VLMFamily(vision_encoder=QWEN_VISUAL, vision_tokens=QWEN_VISUAL, positions=QWEN_MROPE,
                                     **facts))


# hidden_size is the merger output (= text hidden size), embed_dim the ViT width
build_tiny = tiny_qwen_builder(
    ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"),
    dict(depth=2, embed_dim=64, hidden_size=64, mlp_ratio=2, num_heads=2, patch_size=14, spatial_merge_size=2,
         temporal_patch_size=2))

# vision_config.hidden_size is the merger output (= LM hidden); embed_dim is the ViT width.
FAMILY = register_qwen_family(model_type="qwen2_vl", name="Qwen2-VL", example="Qwen/Qwen2-VL-7B-Instruct",
                              vision_dim_of=lambda config: config.vision_config.hidden_size,
                              reuses_vision_outputs=True, tiny_model="tiny-qwen2-vl", build_tiny=build_tiny)
