"""Model sizes for the efficiency tools, built in code (no downloads): 7B (the paper's), small (CPU), tiny (tests).

Each profile pairs a Qwen2-VL config with the Vamba config of the same size (`VambaConfig.from_qwen2vl_config`),
so every comparison is between two models that share the vision tower, the text path and the vocabulary and
differ only in what Vamba adds (cross-attention, Mamba-2 on the video, the video kept out of the text).

- "7b": Qwen2-VL-7B-Instruct and Vamba-7B exactly as in DESIGN.md section 2 (bf16). Only ever built on the meta
  device here (FLOP counting) or measured on a GPU.
- "small": a ~0.2B model for CPU measurements. It keeps the 7B *geometry* of the visual input (patch 14, temporal
  patch 2, 2x2 merge: 149.5 visual tokens per 640x360 frame), the 7B vocabulary (so the stock baseline's
  full-vocabulary logits cost what they cost at 7B per token) and the 7B ratios (GQA 4:1, MLP ~5.3x width,
  Mamba expand 2, headdim 64), at width 512 and 4 layers. Frame counts therefore mean the same token counts as
  at 7B, and the memory/time *ratios* between the two models follow the same laws.
- "tiny": the unit-test size of `vamba.modeling.tiny` (width 64, patch 4), with small default frames (32x32) so
  a whole benchmark run takes seconds.
- "quickstart": exactly the architecture the CPU quickstart trains (`QUICKSTART_TEXT`, `QUICKSTART_VISION`,
  `QUICKSTART_MIXER`: width 128, 2 layers, a 2-block ViT of width 64 with the 7B patch geometry) at its 28x28
  frames (one visual token per temporal patch), so its prefill costs sit beside the quickstart's accuracies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import Qwen2VLConfig

from vamba.modeling.configuration_vamba import VambaConfig
from vamba.modeling.tiny import tiny_qwen2vl_config

# Qwen2-VL's special-token ids (its tokenizer); used to build inputs for the 7B and small profiles.
QWEN_BOS = 151643
QWEN_EOS = 151645
QWEN_VISION_START = 151652
QWEN_VISION_END = 151653
QWEN_IMAGE_PAD = 151655
QWEN_VIDEO_PAD = 151656

PROFILES = ("7b", "small", "tiny", "quickstart")

#: The quickstart's tiny models (configs/experiment/quickstart_*.yaml train them: tests/test_quickstart.py).
QUICKSTART_TEXT = dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2)
QUICKSTART_VISION = dict(depth=2, embed_dim=64, num_heads=2, patch_size=14)
QUICKSTART_MIXER = {"d_state": 16, "headdim": 32, "chunk_size": 64}
QUICKSTART_FRAME = 28


def _qwen2vl(text: dict, vision: dict) -> Qwen2VLConfig:
    """A Qwen2-VL config with Qwen's special-token ids and SDPA attention (the CPU/GPU default we count)."""
    config = Qwen2VLConfig(
        text_config=dict(
            text,
            bos_token_id=QWEN_BOS,
            eos_token_id=QWEN_EOS,
            hidden_act="silu",
            max_position_embeddings=32768,
            use_sliding_window=False,
            attention_dropout=0.0,
            tie_word_embeddings=False,
        ),
        vision_config=dict(vision, in_channels=3, hidden_act="quick_gelu"),
        vision_start_token_id=QWEN_VISION_START,
        vision_end_token_id=QWEN_VISION_END,
        image_token_id=QWEN_IMAGE_PAD,
        video_token_id=QWEN_VIDEO_PAD,
        tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    return config


def qwen2vl_7b_config() -> Qwen2VLConfig:
    """Qwen2-VL-7B-Instruct (DESIGN.md section 2): 28 layers of width 3584, GQA 28/4, MLP 18944, vocab 152064;
    ViT depth 32, width 1280, patch 14, temporal patch 2, 2x2 merge."""
    return _qwen2vl(
        text=dict(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
        ),
        vision=dict(
            depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4, patch_size=14, temporal_patch_size=2,
            spatial_merge_size=2, hidden_size=3584,
        ),
    )


# Release Mamba-2 settings (DESIGN.md section 2); they are also the VambaConfig defaults, spelled out here so the
# profile does not silently change if a default ever does.
VAMBA_7B_MIXER = {"d_state": 128, "d_conv": 4, "expand": 2, "headdim": 64, "ngroups": 1, "chunk_size": 256}


def vamba_7b_config() -> VambaConfig:
    """Vamba-7B: `qwen2vl_7b_config()` plus cross-attention and Mamba-2 (d_state 128, expand 2, headdim 64)."""
    return _vamba(qwen2vl_7b_config(), VAMBA_7B_MIXER)


def _vamba(base: Qwen2VLConfig, mixer: dict) -> VambaConfig:
    config = VambaConfig.from_qwen2vl_config(base, mixer_type="mamba2", mixer_config=dict(mixer))
    config._attn_implementation = "sdpa"
    return config


def small_qwen2vl_config() -> Qwen2VLConfig:
    """~0.2B Qwen2-VL for CPU profiling: width 512, 4 layers, 8 heads / 2 KV heads (head dim 64), MLP 2752,
    vocab 152064; ViT depth 2, width 256, 4 heads, the 7B patch geometry (patch 14, temporal 2, merge 2)."""
    return _qwen2vl(
        text=dict(
            vocab_size=152064,
            hidden_size=512,
            intermediate_size=2752,  # 5.375 x width, as 18944 / 3584 at 7B (rounded to a multiple of 64)
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=2,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [8, 12, 12]},
        ),
        vision=dict(
            depth=2, embed_dim=256, num_heads=4, mlp_ratio=4, patch_size=14, temporal_patch_size=2,
            spatial_merge_size=2, hidden_size=512,
        ),
    )


def small_vamba_config() -> VambaConfig:
    """`small_qwen2vl_config()` plus Vamba's layers with the release Mamba-2 settings (16 heads of 64 at width 512)."""
    return _vamba(small_qwen2vl_config(), VAMBA_7B_MIXER)


@dataclass(frozen=True)
class Profile:
    """A size to profile: the two same-size models and how they are run.

    Attributes:
        name: "7b", "small" or "tiny".
        qwen2vl, vamba: the baseline and the Vamba config of the same size.
        dtype: parameter/activation dtype the size is run in (bf16 at 7B as in the paper; fp32 on CPU, where
            bf16 matmuls are emulated and slow).
        height, width: default frame size in pixels before Qwen2-VL's resize.
        text_tokens: prompt tokens besides the video (question + chat template).
        min_tokens_per_frame_pair, max_tokens_per_frame_pair: Qwen2-VL's video resize bounds, in merged tokens
            per temporal patch (128 and 768 for the released processor), i.e. min/max pixels = that x factor^2.
    """

    name: str
    qwen2vl: Qwen2VLConfig
    vamba: VambaConfig
    dtype: torch.dtype
    height: int = 360
    width: int = 640
    text_tokens: int = 64
    min_tokens_per_frame_pair: int = 128
    max_tokens_per_frame_pair: int = 768


def get_profile_config(name: str) -> Profile:
    """The profile called `name` ("7b", "small" or "tiny").

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name == "7b":
        return Profile("7b", qwen2vl_7b_config(), vamba_7b_config(), torch.bfloat16)
    if name == "small":
        return Profile("small", small_qwen2vl_config(), small_vamba_config(), torch.float32)
    if name == "tiny":
        base = tiny_qwen2vl_config()
        base._attn_implementation = "sdpa"
        vamba = _vamba(base, {"d_state": 16, "headdim": 16, "chunk_size": 8})
        # 32x32 frames at patch 4 (factor 8): 8 visual tokens per frame; bounds scaled so the resize keeps 32x32.
        return Profile("tiny", base, vamba, torch.float32, height=32, width=32, text_tokens=16,
                       min_tokens_per_frame_pair=4, max_tokens_per_frame_pair=768)
    if name == "quickstart":
        base = tiny_qwen2vl_config(**QUICKSTART_TEXT, vision=dict(QUICKSTART_VISION))
        base._attn_implementation = "sdpa"
        vamba = _vamba(base, QUICKSTART_MIXER)
        # The quickstart's prompt is ~90 tokens; its processor allows 1 to 16 merged tokens per frame pair.
        return Profile("quickstart", base, vamba, torch.float32, height=QUICKSTART_FRAME, width=QUICKSTART_FRAME,
                       text_tokens=90, min_tokens_per_frame_pair=1, max_tokens_per_frame_pair=16)
    raise ValueError(f"unknown profile {name!r}; choose one of {PROFILES}")
