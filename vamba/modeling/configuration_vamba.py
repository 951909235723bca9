"""Vamba configuration: a Qwen2-VL config plus the fields Vamba adds (DESIGN.md section 2).

The Vamba fields live on the *text* config because they describe the decoder layers, which only see the
text config. `VambaConfig` still accepts them as flat keyword arguments: `Qwen2VLConfig.__post_init__` routes every
flat keyword that is a text-config field into `text_config`. `from_pretrained` / `from_dict` also read the original
release's flat `config.json` and stock Qwen2-VL configs (`vamba.modeling.release_format`).
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

from .release_format import RELEASE_MIXER_DEFAULTS, config_format, release_to_vamba_dict

MIXER_TYPES = ("mamba2", "mamba1", "none")
CROSS_ATTN_INITS = ("self_attn", "random")

# Mamba-2 mixer settings we implement, in mamba_ssm's argument names, with the release's defaults (DESIGN.md
# section 2). `rescale_prenorm_residual` and `conv_init` only shape the initialisation; the rest is the function.
_MAMBA2_KEYS = ("d_state", "d_conv", "expand", "headdim", "ngroups", "chunk_size", "A_init_range", "dt_min", "dt_max",
                "dt_init_floor", "dt_limit", "bias", "conv_bias", "conv_init", "D_has_hdim", "rescale_prenorm_residual")
MAMBA2_DEFAULTS: dict[str, Any] = {
    **{k: RELEASE_MIXER_DEFAULTS[k] for k in _MAMBA2_KEYS},
    "A_init_range": [float(v) for v in RELEASE_MIXER_DEFAULTS["A_init_range"]],
    "norm_eps": 1e-5,  # the gated and block RMSNorms' epsilon (fixed at 1e-5 in the release)
}
MAMBA1_DEFAULTS: dict[str, Any] = {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto"}

# Keys transformers' Mamba2Config uses for the same settings.
_MIXER_KEY_ALIASES = {
    "state_size": "d_state", "conv_kernel": "d_conv", "head_dim": "headdim", "n_groups": "ngroups",
    "time_step_min": "dt_min", "time_step_max": "dt_max", "time_step_floor": "dt_init_floor",
    "time_step_limit": "dt_limit", "layer_norm_epsilon": "norm_eps", "use_bias": "bias", "use_conv_bias": "conv_bias",
}
# Settings of mamba_ssm's Mamba2 (and of the release's mixer config) that we implement with one value only: any
# other value would change the function, so it is rejected rather than ignored.
_MIXER_FIXED = {
    "norm_type": ("rmsnorm",), "rmsnorm": (True,), "norm_before_gate": (False,), "residual_in_fp32": (False,),
    "d_ssm": (None,), "process_group": (None,), "learnable_init_states": (False,), "activation": ("silu", "swish"),
}
# Kernel and sharding switches that do not change the function (accepted and ignored), and bookkeeping keys.
_MIXER_IGNORED = {"use_mem_eff_path", "sequence_parallel", "model_type", "enable", "hidden_dim", "d_model", "layer_idx"}


def normalize_mixer_config(
    mixer_type: str, mixer_config: dict[str, Any] | None, hidden_size: int | None = None
) -> dict[str, Any]:
    """Merge user/release mixer hyper-parameters over the defaults of `mixer_type`, in our key names.

    Release keys (`vision_mamba_mixer_config`) are accepted: each is honoured, or rejected when it holds a value we
    do not implement (`_MIXER_FIXED`); kernel and sharding switches are ignored (`_MIXER_IGNORED`). `hidden_dim`
    must equal the model's `hidden_size` when both are known.

    Raises:
        ValueError: naming the key, its value and what is supported.
    """
    if mixer_type == "none":
        return {}  # no mixer: nothing to configure (a config may still carry another mixer's settings)
    defaults = MAMBA2_DEFAULTS if mixer_type == "mamba2" else MAMBA1_DEFAULTS
    out = dict(defaults)
    for key, value in (mixer_config or {}).items():
        key = _MIXER_KEY_ALIASES.get(key, key)
        if key in ("hidden_dim", "d_model") and hidden_size is not None and value not in (None, hidden_size):
            raise ValueError(f"mixer_config: {key}={value} but the model's hidden_size is {hidden_size}")
        if key in _MIXER_FIXED:
            if value not in _MIXER_FIXED[key] and not (key == "d_ssm" and value == _d_inner(out, hidden_size)):
                raise ValueError(
                    f"mixer_config: {key}={value!r} is not supported (supported: {_MIXER_FIXED[key][0]!r})"
                )
            continue
        if key in _MIXER_IGNORED or value is None:  # None = unset (the default), so a YAML override can drop a key
            continue
        if key not in defaults:
            raise ValueError(
                f"mixer_config: unknown key {key!r} for mixer_type={mixer_type!r}; known keys: {sorted(defaults)}"
            )
        out[key] = [float(v) for v in value] if key in ("dt_limit", "A_init_range") else value
    return out


def _d_inner(mixer: dict[str, Any], hidden_size: int | None) -> int | None:
    return None if hidden_size is None else int(mixer.get("expand", 2)) * hidden_size


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
            self.mixer_config = {**release, **(self.mixer_config or {})}
            self.vision_mamba_mixer_config = None
            if not release.get("enable", False):  # the release's default: no mixer
                self.mixer_type = "none"
        if self.mixer_type not in MIXER_TYPES:
            raise ValueError(f"mixer_type must be one of {MIXER_TYPES}, got {self.mixer_type!r}")
        if self.cross_attn_init not in CROSS_ATTN_INITS:
            raise ValueError(f"cross_attn_init must be one of {CROSS_ATTN_INITS}, got {self.cross_attn_init!r}")
        if not (self.distill_coeff >= 0 and math.isfinite(self.distill_coeff)):
            raise ValueError(f"distill_coeff must be a finite number >= 0, got {self.distill_coeff!r}")
        self.mixer_config = normalize_mixer_config(self.mixer_type, self.mixer_config, self.hidden_size)
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
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        """Read `config.json` in any of the three formats (ours, the release's, stock Qwen2-VL) as ours."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        source = f"{pretrained_model_name_or_path}/config.json"
        if config_format(config_dict, source) != "vamba":
            config_dict = release_to_vamba_dict(config_dict)
        return config_dict, kwargs

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs):
        """Build from a config dict in any of the three formats (see `vamba.modeling.release_format`)."""
        if config_format(config_dict) != "vamba":
            config_dict = release_to_vamba_dict(config_dict)
        return super().from_dict(config_dict, **kwargs)

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


_TEXT_ONLY_FIELDS = ("mixer_type", "mixer_config", "use_alpha_balancing", "cross_attn_init",
                     "cross_attn_use_position_embeddings", "cross_attn_use_layer_norm", "distill_coeff",
                     "vision_mamba_mixer_config")
