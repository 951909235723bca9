"""Vamba model: configuration, the hybrid decoder, Mamba mixers, the SSD scan and checkpoint conversion.

Importing this package registers Vamba with transformers' Auto classes and its checkpoint-key renaming, so
`AutoModelForImageTextToText.from_pretrained(dir)` works on a Vamba directory and checkpoints in the original
release's layout (`model.layers.N...`, `visual.*`) load into `VambaForConditionalGeneration`.
"""

from . import compat  # noqa: F401, I001  (first: an unsupported transformers release fails here, naming the range)
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping

from .cache import VambaCache
from .configuration_vamba import VambaConfig, VambaTextConfig
from .mamba2 import Mamba1Mixer, Mamba2Mixer, Mamba2State, build_mixer
from .modeling_vamba import (
    VambaDecoderLayer,
    VambaForConditionalGeneration,
    VambaModel,
    VambaTextModel,
    VisionMixerBlock,
)
from .ssd import ssd_chunk_scan


def _register() -> None:
    AutoConfig.register("vamba", VambaConfig, exist_ok=True)
    AutoConfig.register("vamba_text", VambaTextConfig, exist_ok=True)
    AutoModel.register(VambaConfig, VambaModel, exist_ok=True)
    AutoModelForImageTextToText.register(VambaConfig, VambaForConditionalGeneration, exist_ok=True)
    # The release saved Qwen2-VL 4.44's flat layout; the renaming rules are exactly Qwen2-VL's own.
    for ours, theirs in (
        ("VambaForConditionalGeneration", "Qwen2VLForConditionalGeneration"),
        ("VambaModel", "Qwen2VLModel"),
    ):
        register_checkpoint_conversion_mapping(ours, get_checkpoint_conversion_mapping(theirs), overwrite=True)


_register()

__all__ = [
    "Mamba1Mixer",
    "Mamba2Mixer",
    "Mamba2State",
    "VambaCache",
    "VambaConfig",
    "VambaDecoderLayer",
    "VambaForConditionalGeneration",
    "VambaModel",
    "VambaTextConfig",
    "VambaTextModel",
    "VisionMixerBlock",
    "build_mixer",
    "ssd_chunk_scan",
]
