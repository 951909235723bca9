"""Prefill FLOPs: linear in the number of video tokens for Vamba, super-linear for Qwen2-VL with the video inline.

Counted with `vamba.efficiency.count_flops` (torch's FlopCounterMode with CPU attention counted, see flops.py)
on two same-size models built from one tiny config, at a width where attention over the inline video dominates
the baseline's cost. The vision tower is the same in both and is included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Qwen2VLForConditionalGeneration

from vamba import VambaConfig, VambaForConditionalGeneration
from vamba.efficiency import count_flops
from vamba.modeling.tiny import BOS, VIDEO_PAD, VISION_END, VISION_START, tiny_qwen2vl_config

TEXT = 32


def _inputs(config, tokens: int, inline: bool) -> dict:
    grid = torch.tensor([[tokens // 4, 4, 4]])  # (t, 4, 4) patches merge 2x2 -> 4 visual tokens per temporal patch
    v = config.vision_config
    pixels = torch.randn(int(grid.prod()), v.in_channels * v.temporal_patch_size * v.patch_size**2)
    text = [7] * TEXT
    if inline:
        ids = torch.tensor([[BOS, VISION_START] + [VIDEO_PAD] * tokens + [VISION_END] + text])
        types = torch.zeros_like(ids)
        types[0, 2 : 2 + tokens] = 2
        return dict(input_ids=ids, pixel_values_videos=pixels, video_grid_thw=grid, mm_token_type_ids=types)
    ids = torch.tensor([[BOS, VISION_START, VISION_END] + text])
    return dict(input_ids=ids, pixel_values_videos=pixels, video_grid_thw=grid)


def _prefill_flops(model, inputs) -> int:
    with torch.no_grad():
        return count_flops(lambda: model(**inputs, use_cache=False, logits_to_keep=1))


def test_cpu_attention_is_counted():
    q, k = torch.randn(1, 4, 64, 16), torch.randn(1, 2, 64, 16)
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, k, enable_gqa=True)) == 4 * 4 * 64 * 64 * 16


def test_prefill_flops_linear_for_vamba_superlinear_for_qwen2vl():
    torch.manual_seed(0)
    base = tiny_qwen2vl_config(num_hidden_layers=2)
    vamba = VambaForConditionalGeneration(
        VambaConfig.from_qwen2vl_config(base, mixer_config={"d_state": 16, "headdim": 16, "chunk_size": 64})
    ).eval()
    qwen = Qwen2VLForConditionalGeneration(base).eval()
    m = 512
    vamba_ratio = _prefill_flops(vamba, _inputs(base, 4 * m, False)) / _prefill_flops(vamba, _inputs(base, m, False))
    qwen_ratio = _prefill_flops(qwen, _inputs(base, 4 * m, True)) / _prefill_flops(qwen, _inputs(base, m, True))
    print(f"flops ratio 4M/M: vamba {vamba_ratio:.3f}, qwen2-vl {qwen_ratio:.3f}")
    assert vamba_ratio < 4.4, vamba_ratio
    assert qwen_ratio > 5.0, qwen_ratio
