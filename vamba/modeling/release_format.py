"""The original release's checkpoint format: recognise it, read it into our config, and write it back.

The release (TIGER-AI-Lab/Vamba, its own Qwen2-VL copy under transformers 4.44) saves a *flat* Qwen2-VL
`config.json`: `model_type: qwen2_vl`, `architectures: [Qwen2VLForConditionalGeneration]`, the text fields and
`rope_scaling` at the top level, the Vamba layer switches flat, and `vision_mamba_mixer_config` holding `enable`,
`hidden_dim`, `model_type` and only the mixer fields that differ from the release's defaults
(`RELEASE_MIXER_DEFAULTS`). Like every transformers 4.x `save_pretrained`, it writes a field of the base
`PretrainedConfig` (`bos_token_id`, `eos_token_id`, `tie_word_embeddings`, ...) only when it differs from that
class's default (None / True), and a vision field only when it differs from the vision config's default.
Weight names are the same as ours (transformers maps `model.layers.*` / `visual.*` on load and back on save).

Three formats reach `VambaConfig`: ours (`model_type: vamba`, nested), the release's (detected by its Vamba keys),
and a stock Qwen2-VL config (then the Vamba fields take their defaults, for conversion).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import transformers
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig

from .errors import UsageError

# The release's mixer config fields and their defaults (omitted fields take these).
RELEASE_MIXER_DEFAULTS: dict[str, Any] = {
    "enable": False,
    "hidden_dim": 3584,
    "norm_type": "rmsnorm",
    "residual_in_fp32": False,
    "d_state": 128,
    "d_conv": 4,
    "conv_init": None,
    "expand": 2,
    "headdim": 64,
    "d_ssm": None,
    "ngroups": 1,
    "A_init_range": [1, 16],
    "D_has_hdim": False,
    "rmsnorm": True,
    "norm_before_gate": False,
    "dt_min": 0.001,
    "dt_max": 0.1,
    "dt_init_floor": 1e-4,
    "dt_limit": [0.0, math.inf],
    "bias": False,
    "conv_bias": True,
    "chunk_size": 256,
    "use_mem_eff_path": True,
    "process_group": None,
    "sequence_parallel": True,
    "rescale_prenorm_residual": True,
}
# The Vamba switches the release stores flat; with `vision_mamba_mixer_config` they identify its format.
RELEASE_FLAT_KEYS = ("use_alpha_balancing", "cross_attn_use_position_embeddings", "cross_attn_use_layer_norm",
                     "distill_coeff")
RELEASE_KEYS = ("vision_mamba_mixer_config", *RELEASE_FLAT_KEYS)
# Text fields the release's config class defines itself, so transformers 4.x always writes them.
_TEXT_FIELDS = ("attention_dropout", "hidden_act", "hidden_size", "initializer_range", "intermediate_size",
                "max_position_embeddings", "max_window_layers", "num_attention_heads", "num_hidden_layers",
                "num_key_value_heads", "rms_norm_eps", "sliding_window", "use_cache", "use_sliding_window",
                "vocab_size")
_TOKEN_FIELDS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
# Base-class fields written only when they differ from `PretrainedConfig`'s default (value here).
_BASE_DEFAULTS = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None, "tie_word_embeddings": True}
_VISION_FIELDS = ("depth", "embed_dim", "hidden_size", "hidden_act", "mlp_ratio", "num_heads", "in_channels",
                  "patch_size", "spatial_merge_size", "temporal_patch_size")


def config_format(config_dict: dict[str, Any], source: str = "config.json") -> str:
    """"vamba", "release" or "qwen2_vl" for a config dict; anything else is an error naming the expected keys."""
    model_type = config_dict.get("model_type")
    if model_type == "vamba":
        return "vamba"
    if model_type == "qwen2_vl":
        return "release" if any(k in config_dict for k in RELEASE_KEYS) else "qwen2_vl"
    raise ValueError(
        f"{source}: not a Vamba checkpoint config. Expected one of: our format (model_type 'vamba' with "
        f"text_config and vision_config), the release's (model_type 'qwen2_vl' with any of {list(RELEASE_KEYS)}), "
        f"or a stock Qwen2-VL config (model_type 'qwen2_vl'); got model_type {model_type!r} and keys "
        f"{sorted(config_dict)}"
    )


def release_to_vamba_dict(config_dict: dict[str, Any]) -> dict[str, Any]:
    """A release (or stock Qwen2-VL) config dict as `VambaConfig` keyword arguments.

    Omitted fields take the release's defaults where they differ from transformers 5's: no bos/eos/pad ids, and
    no mixer unless `vision_mamba_mixer_config.enable` is true. The mixer fields are checked by
    `normalize_mixer_config` (honoured, or rejected naming the field, its value and the supported value).
    """
    out = {k: v for k, v in config_dict.items() if k not in ("architectures", "transformers_version")}
    out["model_type"] = "vamba"
    if config_format(config_dict) == "release":
        for key, default in _BASE_DEFAULTS.items():
            if key != "tie_word_embeddings":
                out.setdefault(key, default)
        out["vision_mamba_mixer_config"] = dict(out.get("vision_mamba_mixer_config") or {})
    return out


def _mixer_to_release(text_config: Any) -> dict[str, Any]:
    """Our mixer settings as the release's `vision_mamba_mixer_config` (non-default fields only)."""
    if text_config.mixer_type == "mamba1":
        raise UsageError("mixer_type 'mamba1' has no release equivalent (the release's mixer is Mamba-2)")
    out: dict[str, Any] = {"enable": text_config.mixer_type == "mamba2", "hidden_dim": text_config.hidden_size,
                           "model_type": "qwen2_vl"}
    settings = dict(text_config.mixer_config)
    if settings.pop("norm_eps", 1e-5) != 1e-5:
        raise UsageError("mixer_config.norm_eps != 1e-5 has no release equivalent (the release fixes it at 1e-5)")
    for key, value in settings.items():
        default = RELEASE_MIXER_DEFAULTS[key]
        if isinstance(default, list):
            value, default = [float(v) for v in value], [float(v) for v in default]
        if value != default:
            out[key] = value
    return dict(sorted(out.items()))


def vamba_to_release_dict(config: Any) -> dict[str, Any]:
    """The `config.json` the release's `save_pretrained` writes for the same model (see module docstring)."""
    text = config.text_config
    rope = dict(text.rope_parameters or {})
    out: dict[str, Any] = {
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "model_type": "qwen2_vl",
        "transformers_version": transformers.__version__,
        "torch_dtype": str(text.dtype or config.dtype or "float32").replace("torch.", ""),
        "rope_theta": rope.get("rope_theta", 1e6),
        "rope_scaling": {"mrope_section": list(rope["mrope_section"]), "rope_type": "default", "type": "default"},
        "vision_mamba_mixer_config": _mixer_to_release(text),
    }
    for key in _TEXT_FIELDS:
        out[key] = getattr(text, key)
    if out["sliding_window"] is None:  # transformers 5 clears it when sliding windows are off; 4.x kept the value
        out["sliding_window"] = 4096
    for key in RELEASE_FLAT_KEYS:
        out[key] = getattr(text, key)
    for key in _TOKEN_FIELDS:
        out[key] = getattr(config, key)
    # <|vision_pad|> follows <|vision_end|> in Qwen's vocabulary; the release stores its id as vision_token_id.
    out["vision_token_id"] = getattr(config, "vision_token_id", config.vision_end_token_id + 1)
    for key, default in _BASE_DEFAULTS.items():
        value = getattr(config if key == "tie_word_embeddings" else text, key)
        if value != default:
            out[key] = value
    vision_defaults = Qwen2VLVisionConfig()
    vision = {k: getattr(config.vision_config, k) for k in _VISION_FIELDS
              if getattr(config.vision_config, k) != getattr(vision_defaults, k)}
    out["vision_config"] = dict(sorted({**vision, "model_type": "qwen2_vl"}.items()))
    return dict(sorted(out.items()))


def write_release_config(config: Any, directory: str | Path) -> Path:
    """Write `config.json` in the release's layout (indent 2, sorted keys, as transformers 4.x writes it)."""
    path = Path(directory) / "config.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(vamba_to_release_dict(config), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path
