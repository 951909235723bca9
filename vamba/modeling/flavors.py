"""One registry of model sizes ("flavors", as torchtitan calls them): tiny, quickstart, small and 7b.

A flavor is a Qwen2-VL size plus the Mamba-2 mixer Vamba adds to it, so every comparison is between two models
that share the vision tower, the text path and the vocabulary. Configs, tests and `vamba bench` pick a flavor by
name (`model.flavor=tiny`, `--model small`) and may override single fields; nothing is downloaded.

- tiny: the unit-test size: width 64, 2 layers, a 1-block ViT of width 32 with patch 4; the ids of the offline
  tiny tokenizer (`vamba.data.processor`: 256 byte tokens, then Qwen's special tokens in Qwen's order).
- quickstart: the CPU quickstart's models: width 128, 2 layers, a 2-block ViT of width 64 with the 7B patch
  geometry (patch 14); tiny-tokenizer ids.
- small: ~0.2B for CPU measurements. The 7B's visual geometry (patch 14, temporal patch 2, 2x2 merge: 149.5 visual
  tokens per 640x360 frame), vocabulary and ratios (GQA 4:1, MLP ~5.4x width, Mamba expand 2, headdim 64) at width
  512 and 4 layers, so frame counts mean the same token counts as at 7B.
- 7b: Qwen2-VL-7B-Instruct and Vamba-7B exactly as in DESIGN.md section 2, run in bf16.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import Qwen2VLConfig

from .configuration_vamba import VambaConfig

# The tiny tokenizer's ids: 256 byte tokens, then Qwen's special tokens in Qwen's order; its vocabulary is 272.
TINY_VOCAB = 272
ENDOFTEXT, IM_START, IM_END, VISION_START, VISION_END, VISION_PAD, IMAGE_PAD, VIDEO_PAD = range(256, 264)
TINY_IDS = {"bos": ENDOFTEXT, "eos": IM_END, "pad": ENDOFTEXT, "vision_start": VISION_START,
            "vision_end": VISION_END, "image": IMAGE_PAD, "video": VIDEO_PAD}
QWEN_IDS = {"bos": 151643, "eos": 151645, "pad": None, "vision_start": 151652, "vision_end": 151653,
            "image": 151655, "video": 151656}
# Text fields of Qwen2-VL's release configs (the tiny flavors keep transformers' defaults instead).
_QWEN_TEXT = {"hidden_act": "silu", "max_position_embeddings": 32768, "use_sliding_window": False,
              "attention_dropout": 0.0, "tie_word_embeddings": False, "rms_norm_eps": 1e-6, "vocab_size": 152064}
_QWEN_VISION = {"in_channels": 3, "hidden_act": "quick_gelu", "mlp_ratio": 4, "patch_size": 14,
                "temporal_patch_size": 2, "spatial_merge_size": 2}
# The release's Mamba-2 settings (DESIGN.md section 2), spelled out so a flavor never follows a changed default.
_RELEASE_MIXER = {"d_state": 128, "d_conv": 4, "expand": 2, "headdim": 64, "ngroups": 1, "chunk_size": 256}


@dataclass(frozen=True)
class Flavor:
    """A size: Qwen2-VL text and vision config fields, Vamba's `mixer_config`, the special-token ids and the
    dtype the efficiency tools run it in (bf16 at 7B as in the paper; fp32 on CPU, where bf16 is emulated)."""

    text: dict[str, Any]
    vision: dict[str, Any]
    mixer: dict[str, Any]
    ids: dict[str, int | None] = field(default_factory=lambda: dict(QWEN_IDS))
    rope_theta: float = 1_000_000.0
    dtype: torch.dtype = torch.float32


FLAVORS: dict[str, Flavor] = {
    "tiny": Flavor(
        text={"vocab_size": TINY_VOCAB, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096},
        vision={"depth": 1, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2, "patch_size": 4},
        mixer={"d_state": 16, "headdim": 16, "chunk_size": 8}, ids=TINY_IDS, rope_theta=10000.0),
    "quickstart": Flavor(
        text={"vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096},
        vision={"depth": 2, "embed_dim": 64, "num_heads": 2, "mlp_ratio": 2, "patch_size": 14},
        mixer={"d_state": 16, "headdim": 32, "chunk_size": 64}, ids=TINY_IDS, rope_theta=10000.0),
    "small": Flavor(  # MLP 2752 = 5.375 x width, as 18944 / 3584 at 7B (rounded to a multiple of 64)
        text={**_QWEN_TEXT, "hidden_size": 512, "intermediate_size": 2752, "num_hidden_layers": 4,
              "num_attention_heads": 8, "num_key_value_heads": 2},
        vision={**_QWEN_VISION, "depth": 2, "embed_dim": 256, "num_heads": 4}, mixer=_RELEASE_MIXER),
    "7b": Flavor(
        text={**_QWEN_TEXT, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
              "num_attention_heads": 28, "num_key_value_heads": 4},
        vision={**_QWEN_VISION, "depth": 32, "embed_dim": 1280, "num_heads": 16}, mixer=_RELEASE_MIXER,
        dtype=torch.bfloat16),
}


def get_flavor(name: str) -> Flavor:
    """The flavor called `name`; ValueError naming the known ones otherwise."""
    if name not in FLAVORS:
        raise ValueError(f"unknown model flavor {name!r}; choose one of {sorted(FLAVORS)}")
    return FLAVORS[name]


def qwen2vl_config(flavor: str, vision: dict[str, Any] | None = None, **text: Any) -> Qwen2VLConfig:
    """The flavor's Qwen2-VL config; keyword arguments override text-config fields, `vision` vision-config fields.

    M-RoPE sections split head_dim / 2 rotary frequencies as Qwen2-VL's [16, 24, 24] of 64.
    """
    f = get_flavor(flavor)
    text = {**f.text, **text}
    vision = {**f.vision, **(vision or {}), "hidden_size": text["hidden_size"]}
    half = text["hidden_size"] // text["num_attention_heads"] // 2
    t, hw = half // 4, (half - half // 4) // 2
    text.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": f.rope_theta})
    text["rope_parameters"] = {**text["rope_parameters"], "mrope_section": [t, hw, half - t - hw]}
    ids = f.ids
    text.update(bos_token_id=ids["bos"], eos_token_id=ids["eos"])
    if ids["pad"] is not None:
        text["pad_token_id"] = ids["pad"]
    extra = {"tie_word_embeddings": False} if "tie_word_embeddings" in text else {}
    return Qwen2VLConfig(text_config=text, vision_config=vision, vision_start_token_id=ids["vision_start"],
                         vision_end_token_id=ids["vision_end"], image_token_id=ids["image"],
                         video_token_id=ids["video"], **extra)


def vamba_config(flavor: str, base: Qwen2VLConfig | None = None, **vamba_fields: Any) -> VambaConfig:
    """The flavor's Vamba config: `base` (default: the flavor's Qwen2-VL config) plus its Mamba-2 mixer.

    `vamba_fields` override Vamba fields; a `mixer_config` given there updates the flavor's mixer key by key.
    """
    mixer = {**get_flavor(flavor).mixer, **(vamba_fields.pop("mixer_config", None) or {})}
    return VambaConfig.from_qwen2vl_config(base or qwen2vl_config(flavor), mixer_config=mixer, **vamba_fields)
