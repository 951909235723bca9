"""The mixers' fused CUDA path: mamba_ssm's Triton kernels (and causal-conv1d), loaded lazily, and how we call them.

`Mamba2Mixer` / `Mamba1Mixer` (`vamba.modeling.mamba2`) take this path when ``use_kernels`` is set, the input is
on a CUDA device and mamba_ssm's Triton kernels import. The packages are an optional extra (``pip install
.[cuda]``); this module imports without them, and the pure-PyTorch path computes the same function everywhere.

What runs (Mamba-2):

* no streaming state, causal-conv1d installed, conv channels a multiple of 8: the one fused kernel
  ``mamba_split_conv1d_scan_combined`` (split, conv, scan, gated RMSNorm and out_proj; memory-efficient backward);
* otherwise (a streaming state; no causal-conv1d; conv channels that causal-conv1d's channel-last layout, and so
  the fused kernel, rejects): the depthwise conv through causal-conv1d where its argument rules allow, else our
  PyTorch conv; ``mamba_chunk_scan_combined`` (seq_idx, initial and final states); mamba_ssm's gated RMSNorm;
  out_proj;

Mamba-1: causal-conv1d (or our conv) and ``selective_scan_fn`` (mamba_ssm's CUDA extension), without seq_idx.

Test hook: inside `fused_on_cpu()` the fused paths also run on CPU tensors. The kernel test lane (tests/kernels)
uses it with TRITON_INTERPRET=1, under which Triton's interpreter executes mamba_ssm's kernels on the CPU.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

from .causal_conv import _extend_with_state, _next_conv_state, causal_depthwise_conv

__all__ = ["NO_DT_LIMIT", "fused_kernels", "fused_on_cpu", "load_kernels", "mamba1_fused", "mamba2_fused"]

NO_DT_LIMIT = (0.0, float("inf"))

# The kernel table while `fused_on_cpu` is active (None otherwise).
_ON_CPU: SimpleNamespace | None = None


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


def _import_mamba_ssm(name: str) -> ModuleType:
    """Import the mamba_ssm submodule `name`, also where ``import mamba_ssm`` itself fails.

    mamba_ssm's ``__init__`` imports its CUDA extension (``selective_scan_cuda``), which a Triton-only install
    (built with MAMBA_SKIP_CUDA_BUILD) or a CPU machine lacks, although the Triton kernels need no extension. Then
    the package is registered without running its ``__init__`` and the submodule imported from it.
    """
    try:
        return importlib.import_module(name)
    except ImportError:
        if "mamba_ssm" in sys.modules or importlib.util.find_spec("mamba_ssm") is None:
            raise
    sys.modules["mamba_ssm"] = importlib.util.module_from_spec(importlib.util.find_spec("mamba_ssm"))
    return importlib.import_module(name)


def _optional(module: str, attr: str) -> Any:
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, OSError, AttributeError):
        return None


@functools.cache
def load_kernels() -> SimpleNamespace | None:
    """mamba_ssm's Triton kernels (and the CUDA-extension entry points where installed), or None when mamba_ssm's
    Triton kernels do not import. Cached: imported once.

    Attributes: ``mamba_chunk_scan_combined``, ``mamba_split_conv1d_scan_combined``, ``rmsnorm_fn`` (gated
    RMSNorm) and ``ssd_combined`` (the module; whether it found causal-conv1d is read from it at call time);
    ``selective_scan_fn`` (mamba_ssm's CUDA extension) and ``causal_conv1d_fn`` (causal-conv1d), None where absent.
    """
    try:
        ssd = _import_mamba_ssm("mamba_ssm.ops.triton.ssd_combined")
        norm = _import_mamba_ssm("mamba_ssm.ops.triton.layernorm_gated")
    except (ImportError, OSError):
        return None
    return SimpleNamespace(
        ssd_combined=ssd,
        mamba_chunk_scan_combined=ssd.mamba_chunk_scan_combined,
        mamba_split_conv1d_scan_combined=ssd.mamba_split_conv1d_scan_combined,
        rmsnorm_fn=norm.rmsnorm_fn,
        selective_scan_fn=_optional("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn"),
        causal_conv1d_fn=_optional("causal_conv1d", "causal_conv1d_fn"),
    )


def fused_kernels(use_kernels: bool, hidden_states: torch.Tensor) -> SimpleNamespace | None:
    """The kernel table a mixer runs `hidden_states` with, or None for its pure-PyTorch path."""
    if not use_kernels:
        return None
    if _ON_CPU is not None:
        return _ON_CPU
    return load_kernels() if hidden_states.is_cuda else None


@contextlib.contextmanager
def fused_on_cpu(**replace: Any) -> Iterator[SimpleNamespace]:
    """Test hook: inside the block, mixers with ``use_kernels`` take the fused path on CPU tensors too.

    For the kernel test lane only: TRITON_INTERPRET=1 must be set before Triton is imported, so that Triton's
    interpreter runs the kernels on the CPU. Keyword arguments replace entries of the kernel table, for entry points
    without a CPU form (e.g. ``causal_conv1d_fn`` by a checked stand-in, ``selective_scan_fn`` by mamba_ssm's
    ``selective_scan_ref``). Yields the table in use.

    Raises:
        RuntimeError: when mamba_ssm's Triton kernels do not import.
    """
    global _ON_CPU
    kernels = load_kernels()
    if kernels is None:
        raise RuntimeError("fused_on_cpu: mamba_ssm's Triton kernels do not import (is the `cuda` extra installed?)")
    previous, _ON_CPU = _ON_CPU, SimpleNamespace(**{**vars(kernels), **replace})
    try:
        yield _ON_CPU
    finally:
        _ON_CPU = previous


# ----------------------------------------------------------------------------------------------------------------
# Mamba-2
# ----------------------------------------------------------------------------------------------------------------


def mamba2_fused(mixer: torch.nn.Module, kernels: SimpleNamespace, hidden_states: torch.Tensor,
                 seq_idx: torch.Tensor | None, state: Any | None) -> torch.Tensor:
    """`Mamba2Mixer`'s function through mamba_ssm's kernels: hidden_states (b, l, d_model) -> (b, l, d_model).

    seq_idx: (b, l) packed-sequence ids or None; state: the mixer's `Mamba2State` (updated in place; finished
    sequences already reset by the caller) or None.
    """
    A = mixer._A()
    zxbcdt = mixer.in_proj(hidden_states)  # (b, l, 2 * d_inner + 2 * g * n + h)
    # mamba_ssm only clamps dt when a limit is passed; pass it only when it is not the no-op default.
    limit = {} if mixer.dt_limit == NO_DT_LIMIT else {"dt_limit": mixer.dt_limit}
    conv_weight = mixer.conv1d.weight[:, 0]  # (conv_dim, d_conv)
    if state is None:
        # One fused kernel for split + conv + scan + gated norm + out_proj (memory-efficient backward).
        return kernels.mamba_split_conv1d_scan_combined(
            zxbcdt, conv_weight, mixer.conv1d.bias, mixer.dt_bias, A, D=mixer.D, chunk_size=mixer.chunk_size,
            seq_idx=seq_idx.to(torch.int32).contiguous() if seq_idx is not None else None, activation="silu",
            rmsnorm_weight=mixer.norm.weight, rmsnorm_eps=mixer.norm.eps,
            outproj_weight=mixer.out_proj.weight, outproj_bias=mixer.out_proj.bias, headdim=mixer.headdim,
            ngroups=mixer.ngroups, norm_before_gate=False, **limit,
        )

    # Streaming: the fused kernel cannot start from a conv state, so run the pieces separately.
    z, xBC, dt = mixer._split(zxbcdt)
    if seq_idx is not None:
        # mamba_ssm applies initial_states to tokens with seq_idx == 0; the pure path (and the contract of the
        # mixer) to the first token's sequence. Shifting ids to start at 0 in every row makes them agree.
        seq_idx = (seq_idx - seq_idx[:, :1]).to(torch.int32).contiguous()
    # The new conv state follows the same rules on every path. Only the last d_conv - 1 tokens can reach it
    # (with fewer tokens, the old state's tail does, which _extend_with_state provides).
    tail = slice(xBC.shape[1] - min(xBC.shape[1], mixer.d_conv - 1), None)
    conv_state = _next_conv_state(
        _extend_with_state(xBC[:, tail].transpose(1, 2), state.conv_state, mixer.d_conv),
        seq_idx[:, tail] if seq_idx is not None else None, mixer.d_conv,
    )
    if kernels.causal_conv1d_fn is not None and seq_idx is None:
        # causal-conv1d takes initial_states only in channel-last layout (stride 1 along channels) for both x
        # and the states, and rejects initial_states together with seq_idx.
        x_cl = xBC.contiguous().transpose(1, 2)  # (b, conv_dim, l), channel-last
        init_cl = state.conv_state.to(xBC.dtype).transpose(1, 2).contiguous().transpose(1, 2)
        xBC = kernels.causal_conv1d_fn(
            x_cl, conv_weight, mixer.conv1d.bias, initial_states=init_cl, activation="silu"
        ).transpose(1, 2)
    else:
        conv_out, _ = causal_depthwise_conv(
            xBC.transpose(1, 2), conv_weight, mixer.conv1d.bias, seq_idx, state.conv_state
        )
        xBC = F.silu(conv_out).transpose(1, 2)
    x, B, C = mixer._scan_inputs(xBC)
    y, ssm_state = kernels.mamba_chunk_scan_combined(
        x, dt, A, B, C, chunk_size=mixer.chunk_size, D=mixer.D, z=None, dt_bias=mixer.dt_bias, dt_softplus=True,
        seq_idx=seq_idx, initial_states=state.ssm_state, return_final_states=True, **limit,
    )
    state.conv_state.copy_(conv_state.detach())
    state.ssm_state.copy_(ssm_state.detach())
    y = mixer.norm(y.flatten(2), z)
    return mixer.out_proj(y)


# ----------------------------------------------------------------------------------------------------------------
# Mamba-1
# ----------------------------------------------------------------------------------------------------------------


def mamba1_fused(mixer: torch.nn.Module, kernels: SimpleNamespace, x: torch.Tensor, z: torch.Tensor,
                 A: torch.Tensor) -> torch.Tensor:
    """`Mamba1Mixer`'s function from its in_proj output through causal-conv1d (or our conv) and mamba_ssm's
    ``selective_scan_fn``. x, z: (b, l, d_inner); A: (d_inner, d_state). Returns (b, l, d_model)."""
    conv_weight = mixer.conv1d.weight[:, 0]  # (d_inner, d_conv)
    x_t = x.transpose(1, 2)  # (b, d_inner, l), the layout the CUDA kernels take
    if kernels.causal_conv1d_fn is not None:
        x_t = kernels.causal_conv1d_fn(x_t.contiguous(), conv_weight, mixer.conv1d.bias, activation="silu")
    else:
        x_t = F.silu(causal_depthwise_conv(x_t, conv_weight, mixer.conv1d.bias)[0])
    dt, B, C = mixer.x_proj(x_t.transpose(1, 2)).split([mixer.dt_rank, mixer.d_state, mixer.d_state], dim=-1)
    dt = F.linear(dt, mixer.dt_proj.weight)  # (b, l, d_inner); the bias is added inside the scan
    y = kernels.selective_scan_fn(
        x_t.contiguous(), dt.transpose(1, 2).contiguous(), A,
        B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(),  # (b, n, l)
        mixer.D.float(), z=z.transpose(1, 2).contiguous(), delta_bias=mixer.dt_proj.bias.float(),
        delta_softplus=True,
    )  # (b, d_inner, l)
    return mixer.out_proj(y.transpose(1, 2))
