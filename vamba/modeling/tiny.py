"""The tiny flavor as tests, the README example and CPU smoke runs use it: ids, vocabulary rule, random inputs.

The ids match the offline tiny tokenizer of `vamba.data.processor` (256 byte tokens, then Qwen's special tokens in
Qwen's order), so a tiny model and the tiny processor work together; the model vocab is padded to a multiple of 8.
The sizes themselves live in `vamba.modeling.flavors`.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Qwen2VLConfig

from .configuration_vamba import VambaConfig
from .flavors import (  # noqa: F401 - re-exported: the tiny tokenizer's ids
    ENDOFTEXT,
    IM_END,
    IM_START,
    IMAGE_PAD,
    TINY_VOCAB,
    VIDEO_PAD,
    VISION_END,
    VISION_PAD,
    VISION_START,
    qwen2vl_config,
    vamba_config,
)

VOCAB = TINY_VOCAB
BOS, EOS, PAD = ENDOFTEXT, IM_END, ENDOFTEXT


def tiny_vocab_size(tokenizer_length: int) -> int:
    """Model vocabulary for a tiny tokenizer of this length: at least `VOCAB`, padded to a multiple of 8."""
    return max(VOCAB, -(-tokenizer_length // 8) * 8)


def tiny_qwen2vl_config(**text_overrides: Any) -> Qwen2VLConfig:
    """The tiny flavor's Qwen2-VL: 2 layers of width 64, a 1-block vision tower (patch 4, 2x2 merge, temporal
    patch 2). Keyword arguments override text-config fields; `vision={...}` overrides vision-config fields."""
    return qwen2vl_config("tiny", **text_overrides)


def tiny_vamba_config(**vamba_fields: Any) -> VambaConfig:
    """`tiny_qwen2vl_config()` plus the tiny Mamba-2 mixer (d_state 16, headdim 16, chunk 8)."""
    return vamba_config("tiny", **vamba_fields)


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
