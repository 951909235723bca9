"""Vamba configuration: a Qwen2-VL config plus the fields Vamba adds (DESIGN.md section 2).

The Vamba fields live on the *text* config because they describe the decoder layers, which only see the
text config. `VambaConfig` still accepts them as flat keyword arguments (and reads flat `config.json` files
written by the original release, whose Vamba fields sit at the top level next to the Qwen2-VL fields):
`Qwen2VLConfig.__post_init__` routes every flat keyword that is a text-config field into `text_config`.
"""

from __future__ import annotations

import math
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers.models.qwen2_vl.configuration_qwen2_vl import (
    Qwen2VLConfig,
    Qwen2VLTextConfig,
    Qwen2VLVisionConfig,
)

MIXER_TYPES = ("mamba2", "mamba1", "none")
CROSS_ATTN_INITS = ("self_attn", "random")

# Release defaults of the Mamba-2 mixer (DESIGN.md section 2), in mamba_ssm's argument names.
MAMBA2_DEFAULTS: dict[str, Any] = {
    "d_state": 128,
    "d_conv": 4,
    "expand": 2,
    "headdim": 64,
    "ngroups": 1,
    "chunk_size": 256,
    "A_init_range": [1.0, 16.0],
    "dt_min": 0.001,
    "dt_max": 0.1,
    "dt_init_floor": 1e-4,
    "norm_eps": 1e-5,
}
MAMBA1_DEFAULTS: dict[str, Any] = {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto"}

# Keys the original release (or transformers' Mamba2Config) may carry that mean the same as ours.
_MIXER_KEY_ALIASES = {
    "state_size": "d_state",
    "conv_kernel": "d_conv",
    "head_dim": "headdim",
    "n_groups": "ngroups",
    "time_step_min": "dt_min",
    "time_step_max": "dt_max",
    "time_step_floor": "dt_init_floor",
    "layer_norm_epsilon": "norm_eps",
}
# Release keys that describe kernels, sizes taken from the text config, or training tricks: not model math.
_MIXER_KEYS_IGNORED = {
    "enable", "d_model", "hidden_size", "use_mem_eff_path", "rmsnorm", "norm_before_gate", "bias", "conv_bias",
    "residual_in_fp32", "fused_add_norm", "rescale_prenorm_residual", "n_layer", "num_hidden_layers", "layer_idx",
    "process_group", "sequence_parallel", "dt_limit", "learnable_init_states", "activation", "D_has_hdim",
    "conv_init", "d_ssm", "dtype", "device",
}


def normalize_mixer_config(mixer_type: str, mixer_config: dict[str, Any] | None) -> dict[str, Any]:
    """Merge user/release mixer hyper-parameters over the defaults of `mixer_type`, in our key names.

    Raises:
        ValueError: if a key is unknown for this mixer, naming the key.
    """
    if mixer_type == "none":
        return {}  # no mixer: nothing to configure (a config may still carry another mixer's settings)
    defaults = MAMBA2_DEFAULTS if mixer_type == "mamba2" else MAMBA1_DEFAULTS
    out = dict(defaults)
    for key, value in (mixer_config or {}).items():
        key = _MIXER_KEY_ALIASES.get(key, key)
        if key in _MIXER_KEYS_IGNORED or value is None:  # None = unset, so a YAML override can drop a key
            continue
        if key not in defaults:
            raise ValueError(
                f"mixer_config: unknown key {key!r} for mixer_type={mixer_type!r}; known keys: {sorted(defaults)}"
            )
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


@strict
class VambaTextConfig(Qwen2VLTextConfig):
    r"""Qwen2-VL text config plus Vamba's layer fields.

    mixer_type (`str`, defaults to `"mamba2"`): video-token mixer per layer: `mamba2`, `mamba1` or `none` (ablation).
    mixer_config (`dict`): mixer hyper-parameters in mamba_ssm's names (`d_state`, `d_conv`, `expand`, `headdim`,
        `ngroups`, `chunk_size`, ...); missing keys take the release defaults.
    use_alpha_balancing (`bool`, defaults to `True`): learnable per-layer `a` mixing self- and cross-attention;
        off means a plain sum.
    cross_attn_init (`str`, defaults to `"self_attn"`): how `from_qwen2vl` initialises cross-attention.
    cross_attn_use_position_embeddings (`bool`, defaults to `False`): M-RoPE in cross-attention.
    cross_attn_use_layer_norm (`bool`, defaults to `False`): pass the video through `input_layernorm` before k/v.
    distill_coeff (`float`, defaults to `0.0`): weight of the teacher KL term in training.
    vision_mamba_mixer_config (`dict`, optional): the original release's name for the mixer settings; it is folded
        into `mixer_type`/`mixer_config` when the config is built and not stored.
    """

    model_type = "vamba_text"
    base_config_key = "text_config"

    mixer_type: str = "mamba2"
    mixer_config: dict | None = None
    use_alpha_balancing: bool = True
    cross_attn_init: str = "self_attn"
    cross_attn_use_position_embeddings: bool = False
    cross_attn_use_layer_norm: bool = False
    distill_coeff: float = 0.0
    vision_mamba_mixer_config: dict | None = None

    def __post_init__(self, **kwargs):
        release = self.vision_mamba_mixer_config
        if release is not None:
            release = dict(release)
            if not release.get("enable", True):
                self.mixer_type = "none"
            self.mixer_config = {**release, **(self.mixer_config or {})}
            self.vision_mamba_mixer_config = None
        if self.mixer_type not in MIXER_TYPES:
            raise ValueError(f"mixer_type must be one of {MIXER_TYPES}, got {self.mixer_type!r}")
        if self.cross_attn_init not in CROSS_ATTN_INITS:
            raise ValueError(f"cross_attn_init must be one of {CROSS_ATTN_INITS}, got {self.cross_attn_init!r}")
        if not (self.distill_coeff >= 0 and math.isfinite(self.distill_coeff)):
            raise ValueError(f"distill_coeff must be a finite number >= 0, got {self.distill_coeff!r}")
        self.mixer_config = normalize_mixer_config(self.mixer_type, self.mixer_config)
        super().__post_init__(**kwargs)


@strict
class VambaConfig(Qwen2VLConfig):
    r"""Configuration of [`VambaForConditionalGeneration`].

    Same fields as `Qwen2VLConfig`; the Vamba fields (see `VambaTextConfig`) may be given flat, as in
    `VambaConfig(mixer_type="none", use_alpha_balancing=False, ...)`, or inside `text_config`.

    Example:
        >>> cfg = VambaConfig.from_qwen2vl_config(qwen2vl_config, mixer_type="mamba2")
    """

    model_type = "vamba"
    sub_configs_defaults = {"vision_config": Qwen2VLVisionConfig, "text_config": VambaTextConfig}

    def __post_init__(self, **kwargs):
        # A release config.json stores "model_type": "qwen2_vl" inside vision_config too; handled by the parent.
        if isinstance(self.text_config, dict):
            self.text_config = {k: v for k, v in self.text_config.items() if k != "model_type"}
            # Flat Vamba fields given next to a nested text_config still belong to the text config.
            for key in _TEXT_ONLY_FIELDS:
                if key in kwargs:
                    self.text_config[key] = kwargs.pop(key)
        elif isinstance(self.text_config, Qwen2VLTextConfig) and not isinstance(self.text_config, VambaTextConfig):
            self.text_config = VambaTextConfig(**self.text_config.to_dict())
        super().__post_init__(**kwargs)

    @classmethod
    def from_qwen2vl_config(cls, base: Qwen2VLConfig, **vamba_fields: Any) -> VambaConfig:
        """Build a Vamba config from a Qwen2-VL (or Vamba) config, overriding Vamba fields by keyword."""
        data = base.to_dict()
        for key in ("model_type", "architectures", "transformers_version"):
            data.pop(key, None)
        text = {k: v for k, v in data.pop("text_config").items() if k != "model_type"}
        text.update(vamba_fields)
        vision = {k: v for k, v in data.pop("vision_config").items() if k != "model_type"}
        return cls(text_config=text, vision_config=vision, **data)


_TEXT_ONLY_FIELDS = (
    "mixer_type",
    "mixer_config",
    "use_alpha_balancing",
    "cross_attn_init",
    "cross_attn_use_position_embeddings",
    "cross_attn_use_layer_norm",
    "distill_coeff",
    "vision_mamba_mixer_config",
)
