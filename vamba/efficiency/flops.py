"""FLOP counting that includes attention on every device.

`torch.utils.flop_counter.FlopCounterMode` knows the CUDA SDPA kernels and the meta path, but on real CPU tensors
torch 2.13 dispatches SDPA to `_scaled_dot_product_flash_attention_for_cpu`, which it does not count (it reports
0 FLOPs for attention). We register torch's own SDPA formula (GQA-aware) for that kernel, so CPU counts equal
meta/CUDA counts and attention is never silently left out of a comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

_aten = torch.ops.aten


def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _cpu_sdpa_mapping() -> dict[Any, Callable]:
    mapping: dict[Any, Callable] = {}
    if hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[_aten._scaled_dot_product_flash_attention_for_cpu] = _forward
    if hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[_aten._scaled_dot_product_flash_attention_for_cpu_backward] = _backward
    return mapping


def flop_counter(display: bool = False) -> FlopCounterMode:
    """A `FlopCounterMode` that also counts CPU SDPA (a multiply-add counts as 2 FLOPs)."""
    return FlopCounterMode(display=display, custom_mapping=_cpu_sdpa_mapping())


def count_flops(fn: Callable[[], Any]) -> int:
    """Total FLOPs of running `fn()` (forward, and backward if `fn` calls it)."""
    counter = flop_counter()
    with counter:
        fn()
    return counter.get_total_flops()
