"""The transformers releases Vamba runs on (`SUPPORTED`, checked at import) and every difference between them.

Vamba subclasses transformers' Qwen2-VL modules, whose internals move between minor releases, so only the tested
releases are allowed (CI: the suite on the oldest, the model tests on the newest); another one fails here, naming
the range, instead of deep inside a forward. What differs:
- 5.24 renamed the cache argument and output field `past_key_values` -> `cache` (deprecated until 5.40): `CACHE` is
  this release's name; `accept_cache` lets our forwards take either.
- 5.24's Qwen2-VL head reads `image_outputs` / `video_outputs` from the base model's output: `BaseOutput` has them.
- 5.25's `from_pretrained` swaps in Hub kernels by default: `LOAD_DEFAULTS` turns that off (offline, one torch path).
"""

from __future__ import annotations

import functools

import transformers
from transformers import modeling_outputs

SUPPORTED, TESTED = ">=5.23,<5.26", ("5.23", "5.24", "5.25")
RELEASE = tuple(int(part) for part in transformers.__version__.split(".")[:2])
if not (5, 23) <= RELEASE < (5, 26):
    raise ImportError(f"vamba supports transformers {SUPPORTED} (tested: {', '.join(TESTED)}), found "
                      f"{transformers.__version__}: pip install 'transformers{SUPPORTED}'")

CACHE = "cache" if RELEASE >= (5, 24) else "past_key_values"
BaseOutput = getattr(modeling_outputs, "MultimodalBaseModelOutputWithPast", modeling_outputs.BaseModelOutputWithPast)
LOAD_DEFAULTS = {"use_kernels": False}


def accept_cache(forward):
    """Wrap a forward that takes the cache as `cache` so that it also takes it as `past_key_values` (5.23's name)."""
    @functools.wraps(forward)
    def wrapper(*args, past_key_values=None, **kwargs):
        return forward(*args, **kwargs, **({"cache": past_key_values} if past_key_values is not None else {}))
    return wrapper
