"""Vamba: a hybrid Mamba-Transformer multimodal model for hour-long video (arXiv 2503.11579).

Public API: `VambaConfig`, `VambaForConditionalGeneration`, `from_qwen2vl`.
"""

from .modeling import VambaConfig, VambaForConditionalGeneration
from .modeling.convert import from_qwen2vl

__version__ = "0.1.0"
__all__ = ["VambaConfig", "VambaForConditionalGeneration", "from_qwen2vl", "__version__"]
