"""Turn a Qwen2-VL checkpoint into a Vamba initialisation (DESIGN.md section 2, "Cross-attention initialisation").

Qwen2-VL weights are kept as they are; each layer's cross-attention is a copy of its self-attention (or random,
by config); mixers are freshly initialised; alpha starts at 0.5. The copy gathers parameters first when they are
partitioned by DeepSpeed ZeRO-3, so the same call works inside a ZeRO-3 run.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

from .configuration_vamba import VambaConfig
from .errors import UsageError, check_checkpoint
from .modeling_vamba import VambaForConditionalGeneration, _is_new_layer
from .release_format import vamba_to_release_dict, write_release_config
from .zero import gathered

# Files a Qwen2-VL directory carries besides weights and config, which a converted model needs unchanged.
PROCESSOR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
    "generation_config.json",
)


@torch.no_grad()
def copy_self_attention_to_cross_attention(model: VambaForConditionalGeneration) -> None:
    """Set every layer's cross-attention q/k/v/o weights and biases to that layer's self-attention ones."""
    for layer in model.model.language_model.layers:
        src = dict(layer.self_attn.named_parameters())
        dst = dict(layer.cross_attn.named_parameters())
        if src.keys() != dst.keys():
            raise ValueError(f"layer {layer.layer_idx}: cross-attention parameters {sorted(dst)} != {sorted(src)}")
        with gathered([*src.values(), *dst.values()]):
            for name, param in dst.items():
                param.copy_(src[name])


def from_qwen2vl(
    model_or_path: Qwen2VLForConditionalGeneration | str | Path, **vamba_overrides: Any
) -> VambaForConditionalGeneration:
    """Build a Vamba model from a Qwen2-VL model or checkpoint directory.

    Args:
        model_or_path: an in-memory `Qwen2VLForConditionalGeneration`, or a directory it was saved to.
        **vamba_overrides: Vamba config fields, e.g. `mixer_type="none"`, `cross_attn_init="random"`.

    Returns:
        The Vamba model, in the base model's dtype and on its device (directories load on CPU; under an active
        DeepSpeed ZeRO-3 config, transformers builds it partitioned).
    """
    if isinstance(model_or_path, (str, Path)):
        base_config = Qwen2VLConfig.from_pretrained(model_or_path)
        config = VambaConfig.from_qwen2vl_config(base_config, **vamba_overrides)
        model = VambaForConditionalGeneration.from_pretrained(model_or_path, config=config, new_layers=True)
    else:
        base = model_or_path
        config = VambaConfig.from_qwen2vl_config(base.config, **vamba_overrides)
        param = next(base.parameters())
        model = VambaForConditionalGeneration(config).to(device=param.device, dtype=param.dtype)
        missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
        if unexpected or any(not _is_new_layer(k) for k in missing):
            raise ValueError(
                f"Qwen2-VL state dict does not fit Vamba: unexpected {unexpected[:5]}, missing {missing[:5]}"
            )
    if config.text_config.cross_attn_init == "self_attn":
        copy_self_attention_to_cross_attention(model)
    return model


def convert_checkpoint(base: str | Path, out: str | Path, **vamba_overrides: Any) -> Path:
    """`vamba convert`: write a directory that `VambaForConditionalGeneration.from_pretrained` loads.

    Tokenizer and processor files of the base directory are carried over unchanged.
    """
    base, out = Path(base), Path(out)
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"{base}: no config.json, not a Qwen2-VL checkpoint directory")
    model = from_qwen2vl(base, **vamba_overrides)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in PROCESSOR_FILES:
        if (base / name).is_file():
            shutil.copy2(base / name, out / name)
    return out


EXPORT_FORMATS = ("vamba", "release")


def export_checkpoint(src: str | Path, out: str | Path, format: str = "release") -> Path:
    """`vamba export`: re-save a Vamba checkpoint directory (any format we read) in `format`.

    "release" writes what the original release's `save_pretrained` writes: weights under the same names (ours
    already are), a flat `config.json` in its layout (`vamba.modeling.release_format`); "vamba" writes ours.
    Tokenizer and processor files are copied.
    """
    if format not in EXPORT_FORMATS:
        raise UsageError(f"format must be one of {EXPORT_FORMATS}, got {format!r}")
    src, out = Path(src), Path(out)
    check_checkpoint(src, "--model", hub_ids=False)
    model = VambaForConditionalGeneration.from_pretrained(src)
    if format == "release":
        vamba_to_release_dict(model.config)  # fail on a config the release cannot express, before writing anything
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if format == "release":
        write_release_config(model.config, out)
    for name in PROCESSOR_FILES:
        if (src / name).is_file() and not (out / name).is_file():
            shutil.copy2(src / name, out / name)
    return out
