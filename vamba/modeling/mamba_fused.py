"""The mixers' fused CUDA path: mamba_ssm's Triton kernels (and causal-conv1d), loaded lazily, and how we call them.

`Mamba2Mixer` / `Mamba1Mixer` (`vamba.modeling.mamba2`) take this path when ``use_kernels`` is set, the input is
on a CUDA device and mamba_ssm's Triton kernels import. The packages are an optional extra (``pip install
.[cuda]``); this module imports without them, and the pure-PyTorch path computes the same function everywhere.

What runs (Mamba-2):

* no streaming state, causal-conv1d installed, conv channels a multiple of 8: the one fused kernel
  ``mamba_split_conv1d_scan_combined`` (split, conv, scan, gated RMSNorm and out_proj; memory-efficient backward);
* otherwise (a streaming state; no causal-conv1d; conv channels that causal-conv1d's channel-last layout, and so
  the fused kernel, rejects): the depthwise conv through causal-conv1d where its argument rules allow, else our
  PyTorch conv; ``mamba_chunk_scan_combined`` (seq_idx, initial and final states), or for a one-token streaming
  step without autograd the decoding kernel ``selective_state_update``; mamba_ssm's gated RMSNorm; out_proj.

Mamba-1: causal-conv1d (or our conv) and ``selective_scan_fn`` (mamba_ssm's CUDA extension), without seq_idx.

Test hook: inside `fused_on_cpu()` the fused paths also run on CPU tensors. The kernel test lane (tests/kernels)
uses it with TRITON_INTERPRET=1, under which Triton's interpreter executes mamba_ssm's kernels on the CPU.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import logging
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
    RMSNorm), ``selective_state_update`` (one decoding step) and ``ssd_combined`` (the module; whether it found
    causal-conv1d is read from it at call time);
    ``selective_scan_fn`` (mamba_ssm's CUDA extension) and ``causal_conv1d_fn`` (causal-conv1d), None where absent.
    """
    try:
        ssd = _import_mamba_ssm("mamba_ssm.ops.triton.ssd_combined")
        norm = _import_mamba_ssm("mamba_ssm.ops.triton.layernorm_gated")
        step = _import_mamba_ssm("mamba_ssm.ops.triton.selective_state_update")
    except (ImportError, OSError):
        return None
    return SimpleNamespace(
        ssd_combined=ssd,
        mamba_chunk_scan_combined=ssd.mamba_chunk_scan_combined,
        mamba_split_conv1d_scan_combined=ssd.mamba_split_conv1d_scan_combined,
        rmsnorm_fn=norm.rmsnorm_fn,
        selective_state_update=step.selective_state_update,
        selective_scan_fn=_optional("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn"),
        causal_conv1d_fn=_optional("causal_conv1d", "causal_conv1d_fn"),
    )


def fused_kernels(use_kernels: bool, hidden_states: torch.Tensor) -> SimpleNamespace | None:
    """The kernel table a mixer runs `hidden_states` with, or None for its pure-PyTorch path. A request the kernels
    cannot serve (input not on CUDA, mamba_ssm not importable) falls back to the pure path, said once per process."""
    if not use_kernels:
        return None
    if _ON_CPU is not None:
        return _ON_CPU
    if not hidden_states.is_cuda:
        return _say_once(logging.INFO, f"inputs on {hidden_states.device.type}, not CUDA")
    kernels = load_kernels()
    return kernels or _say_once(logging.WARNING, "mamba_ssm's Triton kernels do not import (pip install .[cuda])")


@functools.cache
def _say_once(level: int, why: str) -> None:
    """Log (once per reason) that the mixers take the pure-PyTorch path; returns None, the "no kernels" answer."""
    logging.getLogger(__name__).log(level, f"Mamba mixers take the pure-PyTorch path: {why}")


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
    if seq_idx is not None:
        if state is not None:
            # mamba_ssm applies initial_states to tokens with seq_idx == 0; the mixer's contract (and the pure path)
            # to the first token's sequence. Ids shifted to start at 0 in every row make them agree.
            seq_idx = seq_idx - seq_idx[:, :1]
        seq_idx = seq_idx.to(torch.int32).contiguous()
    if state is None and _fused_conv_available(kernels, mixer.conv_dim):
        # One kernel for split + conv + scan + gated norm + out_proj (memory-efficient backward).
        return kernels.mamba_split_conv1d_scan_combined(
            zxbcdt, conv_weight, mixer.conv1d.bias, mixer.dt_bias, A, D=mixer._D(), chunk_size=mixer.chunk_size,
            seq_idx=seq_idx, activation="silu", rmsnorm_weight=mixer.norm.weight, rmsnorm_eps=mixer.norm.eps,
            outproj_weight=mixer.out_proj.weight, outproj_bias=mixer.out_proj.bias, headdim=mixer.headdim,
            ngroups=mixer.ngroups, norm_before_gate=False, **limit,
        )

    # The same steps one by one: the fused kernel cannot start from a conv state and needs causal-conv1d.
    z, xBC, dt = mixer._split(zxbcdt)
    if state is not None:
        # The new conv state follows the same rules on every path. Only the last d_conv - 1 tokens can reach it
        # (with fewer tokens, the old state's tail does, which _extend_with_state provides).
        tail = slice(xBC.shape[1] - min(xBC.shape[1], mixer.d_conv - 1), None)
        conv_state = _next_conv_state(
            _extend_with_state(xBC[:, tail].transpose(1, 2), state.conv_state, mixer.d_conv),
            seq_idx[:, tail] if seq_idx is not None else None, mixer.d_conv,
        )
    xBC = _conv_silu(kernels, xBC, conv_weight, mixer.conv1d.bias, seq_idx, state.conv_state if state else None)
    x, B, C = mixer._scan_inputs(xBC)
    if state is not None and x.shape[1] == 1 and not x.requires_grad and not limit:
        y = _decode_step(kernels, mixer, x, dt, A, B, C, state.ssm_state)  # updates state.ssm_state in place
    else:
        result = kernels.mamba_chunk_scan_combined(
            x, dt, A, B, C, chunk_size=mixer.chunk_size, D=mixer._D(), z=None, dt_bias=mixer.dt_bias,
            dt_softplus=True, seq_idx=seq_idx, return_final_states=state is not None,
            # A copy: the kernel saves initial_states for its backward, and the state is updated in place below.
            initial_states=state.ssm_state.clone() if state is not None else None, **limit,
        )
        y = result[0] if state is not None else result
        if state is not None:
            state.ssm_state.copy_(result[1].detach())
    if state is not None:
        state.conv_state.copy_(conv_state.detach())
    y = kernels.rmsnorm_fn(y.flatten(2), mixer.norm.weight, None, z=z, eps=mixer.norm.eps,
                           group_size=mixer.norm.group_size, norm_before_gate=False)
    return mixer.out_proj(y)


def _fused_conv_available(kernels: SimpleNamespace, channels: int) -> bool:
    """Whether mamba_split_conv1d_scan_combined can run: it calls causal-conv1d's functions, which mamba_ssm imports
    itself (None without the package), in channel-last layout, which needs channels a multiple of 8."""
    ssd = kernels.ssd_combined
    found = getattr(ssd, "causal_conv1d_fwd_function", None) is not None
    return found and getattr(ssd, "causal_conv1d_bwd_function", None) is not None and channels % 8 == 0


def _conv_silu(kernels: SimpleNamespace, xBC: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               seq_idx: torch.Tensor | None, conv_state: torch.Tensor | None) -> torch.Tensor:
    """SiLU(depthwise causal conv) of xBC (b, l, c) -> (b, l, c), continuing from conv_state (b, c, k - 1) if given.

    causal-conv1d where its argument rules allow: seq_idx and initial states only in channel-last layout (stride 1
    along channels), which needs c (and so the strides) a multiple of 8, and never both together. Else our conv.
    """
    channels = xBC.shape[-1]
    usable = kernels.causal_conv1d_fn is not None and channels % 8 == 0 and (seq_idx is None or conv_state is None)
    if not usable:
        out, _ = causal_depthwise_conv(xBC.transpose(1, 2), weight, bias, seq_idx, conv_state)
        return F.silu(out, inplace=not out.requires_grad).transpose(1, 2)
    init = None
    if conv_state is not None:
        # A fresh channel-last copy: causal-conv1d saves initial_states for its backward and the state is updated in
        # place afterwards (with d_conv = 2 a transpose-contiguous-transpose would return a view of the state).
        init = conv_state.transpose(1, 2).clone(memory_format=torch.contiguous_format).to(xBC.dtype).transpose(1, 2)
    out = kernels.causal_conv1d_fn(xBC.contiguous().transpose(1, 2), weight, bias, seq_idx=seq_idx,
                                   initial_states=init, activation="silu")
    return out.transpose(1, 2)


def _decode_step(kernels: SimpleNamespace, mixer: torch.nn.Module, x: torch.Tensor, dt: torch.Tensor,
                 A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, ssm_state: torch.Tensor) -> torch.Tensor:
    """One token without autograd through mamba_ssm's decoding kernel ``selective_state_update``, which updates
    ssm_state (b, h, p, n) in place. x: (b, 1, h, p), dt: (b, 1, h), B, C: (b, 1, g, n) -> y (b, 1, h, p).

    Per-head A, dt, dt_bias and D are broadcast over headdim with stride 0, as mamba_ssm's Mamba2.step does.
    """
    heads, headdim, dstate = ssm_state.shape[1:]
    D = mixer._D()  # (h,) or, with D_has_hdim, (h, p)
    D = D if D.dim() == 2 else D[:, None].expand(heads, headdim)
    y = kernels.selective_state_update(
        ssm_state, x[:, 0], dt[:, 0, :, None].expand(-1, -1, headdim), A[:, None, None].expand(-1, headdim, dstate),
        B[:, 0], C[:, 0], D=D, z=None, dt_bias=mixer.dt_bias[:, None].expand(-1, headdim), dt_softplus=True,
    )
    return y[:, None]


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
