"""Tiny Qwen2-VL / Vamba configurations and random inputs, built in code (no downloads).

Used by the tests, the README example and CPU smoke runs. The ids match the offline tiny tokenizer of
`vamba.data.processor` (256 byte tokens, then Qwen's special tokens in Qwen's order), so a tiny model and the
tiny processor work together; the model vocab is padded to a multiple of 8.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Qwen2VLConfig

from .configuration_vamba import VambaConfig

VOCAB = 272
ENDOFTEXT, IM_START, IM_END, VISION_START, VISION_END, VISION_PAD, IMAGE_PAD, VIDEO_PAD = range(256, 264)
BOS, EOS, PAD = ENDOFTEXT, IM_END, ENDOFTEXT


def tiny_vocab_size(tokenizer_length: int) -> int:
    """Model vocabulary for a tiny tokenizer of this length: at least `VOCAB`, padded to a multiple of 8."""
    return max(VOCAB, -(-tokenizer_length // 8) * 8)


def tiny_qwen2vl_config(**text_overrides: Any) -> Qwen2VLConfig:
    """A 2-layer, width-64 Qwen2-VL with a 1-block vision tower (patch 4, 2x2 merge, temporal patch 2).

    Keyword arguments override text-config fields; `vision={...}` overrides vision-config fields.
    """
    text = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    vision = dict(depth=1, embed_dim=32, num_heads=2, mlp_ratio=2, patch_size=4)
    vision.update(text_overrides.pop("vision", {}))
    text.update(text_overrides)
    # M-RoPE sections split head_dim / 2 rotary frequencies like Qwen2-VL's [16, 24, 24] of 64.
    half = text["hidden_size"] // text["num_attention_heads"] // 2
    t, hw = half // 4, (half - half // 4) // 2
    text["rope_parameters"] = {**text["rope_parameters"], "mrope_section": [t, hw, half - t - hw]}
    vision["hidden_size"] = text["hidden_size"]
    return Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
        image_token_id=IMAGE_PAD,
        video_token_id=VIDEO_PAD,
    )


def tiny_vamba_config(**vamba_fields: Any) -> VambaConfig:
    """`tiny_qwen2vl_config` plus a small Mamba-2 mixer (d_state 16, headdim 16, chunk 8)."""
    vamba_fields.setdefault("mixer_config", {"d_state": 16, "headdim": 16, "chunk_size": 8})
    return VambaConfig.from_qwen2vl_config(tiny_qwen2vl_config(), **vamba_fields)


def random_video(
    config: Qwen2VLConfig | VambaConfig, frames: int = 4, height: int = 16, width: int = 16, generator=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random `pixel_values_videos` (patches, C*tp*p*p) and `video_grid_thw` (1, 3) as Qwen2-VL's processor makes.

    Returns:
        pixels, grid_thw; the video has frames/tp * (height/p) * (width/p) / merge^2 visual tokens.
    """
    v = config.vision_config
    t, h, w = frames // v.temporal_patch_size, height // v.patch_size, width // v.patch_size
    row = v.in_channels * v.temporal_patch_size * v.patch_size**2
    pixels = torch.randn(t * h * w, row, generator=generator)
    return pixels, torch.tensor([[t, h, w]])
