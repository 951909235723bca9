"""The transformers releases Vamba runs on, and every difference between them, in one place.

Vamba subclasses transformers' Qwen2-VL modules, whose internals move between minor releases, so only the tested
ones are allowed (`SUPPORTED`; CI runs the suite on the oldest and the model tests on the newest). Another release
fails here, at import, naming the range, instead of deep inside a forward. What differs:

- 5.24 renamed the cache argument and output field `past_key_values` -> `cache` (the old name is deprecated until
  5.40): `CACHE` is the name this release uses, and `accept_cache` lets our forwards take either name.
- 5.24's Qwen2-VL head reads `image_outputs` / `video_outputs` from the base model's output: `BaseOutput` has them.
- 5.25's `from_pretrained` swaps layers for kernels downloaded from the Hub by default: `LOAD_DEFAULTS` keeps
  loading offline and on the same PyTorch path on every release.
"""

from __future__ import annotations

import functools

import transformers

SUPPORTED = ">=5.23,<5.26"
TESTED = ("5.23", "5.24", "5.25")
RELEASE = tuple(int(part) for part in transformers.__version__.split(".")[:2])
if not (5, 23) <= RELEASE < (5, 26):
    raise ImportError(f"vamba supports transformers {SUPPORTED} (tested: {', '.join(TESTED)}), found "
                      f"{transformers.__version__}: pip install 'transformers{SUPPORTED}'")

CACHE = "cache" if RELEASE >= (5, 24) else "past_key_values"
LOAD_DEFAULTS = {"use_kernels": False}

if RELEASE >= (5, 24):
    from transformers.modeling_outputs import MultimodalBaseModelOutputWithPast as BaseOutput
else:
    from transformers.modeling_outputs import BaseModelOutputWithPast as BaseOutput


def accept_cache(forward):
    """Wrap a forward taking the cache as `cache` so that it also takes it as `past_key_values` (5.23's name)."""

    @functools.wraps(forward)
    def wrapper(*args, **kwargs):
        old = kwargs.pop("past_key_values", None)
        if old is not None:
            kwargs["cache"] = old
        return forward(*args, **kwargs)

    return wrapper


__all__ = ["CACHE", "LOAD_DEFAULTS", "SUPPORTED", "TESTED", "BaseOutput", "accept_cache"]
