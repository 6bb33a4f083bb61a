"""InternVL, transformers-native '-hf' checkpoints: InternViT + pixel shuffle + MLP projector + Qwen2 LM.

Each video frame is one tile of the vision tower; the projector maps the pixel-shuffled ViT features to the LM hidden
size, so the vision tokens are the projector's output (``[frames, tokens per frame, hidden]``). Positions are 1-D.
"""

from __future__ import annotations

from ..tiny import build_random_model, text_config
from ..tiny_tokenizer import QWEN2_VL_CHAT_TEMPLATE, build_byte_tokenizer
from .registry import PositionScheme, VLMFamily, register_family

_TINY_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
    "image_token": "<image>",
}


def build_tiny(seed: int = 0, attn_implementation: str | None = None):
    """Tiny transformers-native ``InternVLForConditionalGeneration`` (InternVL3-hf layout: InternViT + pixel
    shuffle + MLP projector + Qwen2 LM) + real ``InternVLProcessor``; each frame is one 56x56 tile -> 4 tokens."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    chat_template = QWEN2_VL_CHAT_TEMPLATE.replace(
        "<|vision_start|><|video_pad|><|vision_end|>", "<video>\n"
    ).replace("<|vision_start|><|image_pad|><|vision_end|>", "<image>\n")
    tokenizer = build_byte_tokenizer(_TINY_TOKENS)
    text = text_config(tokenizer)
    text.pop("rope_parameters")
    config = InternVLConfig(
        vision_config=dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            image_size=[56, 56],
            patch_size=[14, 14],
        ),
        text_config=dict(text, model_type="qwen2"),
        image_token_id=tokenizer.context_image_token_id,
        image_seq_length=4,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )
    model = build_random_model(InternVLForConditionalGeneration, config, seed, attn_implementation)
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size={"height": 56, "width": 56}, crop_to_patches=False),
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(size={"height": 56, "width": 56}, do_sample_frames=False),
        image_seq_length=4,
        chat_template=chat_template,
    )
    return model, processor


def _text_hidden_size(config) -> int:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return text.hidden_size


FAMILY = register_family(VLMFamily(
    model_type="internvl",
    name="InternVL",
    note="transformers-native '-hf' checkpoints",
    example="OpenGVLab/InternVL3-8B-hf",
    vision_encoder=("model.vision_tower", "vision_tower"),
    vision_tokens=("model.multi_modal_projector", "multi_modal_projector"),
    vision_dim_of=_text_hidden_size,  # the projector maps pixel-shuffled ViT features to the LM hidden size
    positions=PositionScheme("1-D positions over the attended tokens"),
    same_frames_per_batch=True,
    unsupported_variants={"internvl_chat": (
        "This is an original remote-code InternVL checkpoint: use its transformers-native '-hf' version "
        "(e.g. OpenGVLab/InternVL3-8B-hf), whose model_type is 'internvl'."
    )},
    tiny_model="tiny-internvl",
    build_tiny=build_tiny,
))
