"""Prefill FLOPs: linear in the number of video tokens for Vamba, super-linear for Qwen2-VL with the video inline.

Counted on the meta device with `torch.utils.flop_counter.FlopCounterMode` (attention included: on meta tensors
SDPA is counted), at a width where attention over the inline video dominates Qwen2-VL's cost.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import Qwen2VLForConditionalGeneration

from vamba import VambaConfig, VambaForConditionalGeneration
from vamba.modeling.tiny import BOS, VIDEO_PAD, VISION_END, VISION_START, tiny_qwen2vl_config

TEXT = 32


def _config():
    # Narrow and shallow so attention over thousands of tokens dominates the quadratic baseline.
    return tiny_qwen2vl_config(hidden_size=64, intermediate_size=128, num_hidden_layers=2)


def _video_grid(tokens: int) -> torch.Tensor:
    # A (t, 2, 2) patch grid merges 2x2 -> one token per temporal patch.
    return torch.tensor([[tokens, 2, 2]])


def _count(model, **inputs) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(**inputs, use_cache=False, logits_to_keep=1)
    return counter.get_total_flops()


def _inputs(config, tokens: int, inline: bool) -> dict:
    grid = _video_grid(tokens)
    v = config.vision_config
    pixels = torch.empty(int(grid.prod()), v.in_channels * v.temporal_patch_size * v.patch_size**2, device="meta")
    text = [BOS] + [7] * TEXT
    if inline:
        ids = torch.tensor([[BOS, VISION_START] + [VIDEO_PAD] * tokens + [VISION_END] + text[1:]], device="meta")
        types = torch.zeros_like(ids, device="cpu")
        types[0, 2 : 2 + tokens] = 2
        return dict(input_ids=ids, pixel_values_videos=pixels, video_grid_thw=grid, mm_token_type_ids=types)
    ids = torch.tensor([[BOS, VISION_START, VISION_END] + text[1:]], device="meta")
    return dict(input_ids=ids, pixel_values_videos=pixels, video_grid_thw=grid)


def test_prefill_flops_linear_for_vamba_superlinear_for_qwen2vl():
    base = _config()
    with torch.device("meta"):
        vamba = VambaForConditionalGeneration(
            VambaConfig.from_qwen2vl_config(base, mixer_config={"d_state": 16, "headdim": 16, "chunk_size": 64})
        )
        qwen = Qwen2VLForConditionalGeneration(base)
    m = 1024
    vamba_ratio = _count(vamba, **_inputs(base, 4 * m, False)) / _count(vamba, **_inputs(base, m, False))
    qwen_ratio = _count(qwen, **_inputs(base, 4 * m, True)) / _count(qwen, **_inputs(base, m, True))
    assert vamba_ratio < 4.4, vamba_ratio
    assert qwen_ratio > 5.0, qwen_ratio
