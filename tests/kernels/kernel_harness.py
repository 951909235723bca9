"""Kernel lane harness: mamba_ssm's Triton kernels on CPU tensors, under Triton's interpreter.

The lane (scripts/test_kernels.sh, a venv with triton and a Triton-only mamba_ssm build) runs tests/kernels with
TRITON_INTERPRET=1: Triton then executes each kernel program with numpy on CPU tensors (this module sets it too,
when imported before Triton). Elsewhere (the main suite, without the optional `cuda` extra) every test here is
skipped. Test modules import the `kernels` fixture from here (no conftest.py: tests/conftest.py is imported by name
by other tests, and a second module of that name would shadow it).

mamba_ssm's Python wrappers assume a CUDA device; `install()` supplies what the CPU lacks, nothing more:
- ``torch.cuda.device(index)`` (entered around every launch, with index None on CPU): a no-op context;
- ``torch.cuda.get_device_properties`` (for an SM count that sizes some grids): a fixed 4-SM answer;
- one pinned config per autotuned kernel: the autotuner benchmarks configs on a GPU driver ("0 active drivers"
  here), while a single config is launched directly. The config with the largest blocks runs fastest in the
  interpreter (fewer, larger numpy steps); masks cover the block overhang.

causal-conv1d is a CUDA extension with no Python path. `causal_conv1d_fn` and the two functions mamba_ssm's fused
kernel calls (`causal_conv1d_fwd_function`, `causal_conv1d_bwd_function`) get stand-ins that enforce its
documented argument rules (csrc/causal_conv1d.cpp's TORCH_CHECKs and causal_conv1d_interface.py's asserts, with
their messages), save for backward what the real ones save, and compute the convolution with an independent
PyTorch formula (unfold + mask; not vamba's causal_depthwise_conv).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from types import ModuleType, SimpleNamespace

import pytest
import torch
import torch.nn.functional as F


def extra_present() -> bool:
    """Whether the optional `cuda` extra's Triton kernels can be imported here (triton and mamba_ssm installed)."""
    return importlib.util.find_spec("triton") is not None and importlib.util.find_spec("mamba_ssm") is not None


if extra_present():
    # Read by Triton when its kernels are defined (at import): set before anything imports triton.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


# ----------------------------------------------------------------------------------------------------------------
# CPU shims for the kernels' wrappers
# ----------------------------------------------------------------------------------------------------------------


def _block_volume(config) -> int:
    volume = 1
    for key, value in config.kwargs.items():
        if key.startswith("BLOCK_SIZE"):
            volume *= value
    return volume


def pin_autotune_configs() -> int:
    """Pin every autotuned kernel of mamba_ssm's Triton modules to its largest-block config; returns how many."""
    from triton.runtime.autotuner import Autotuner

    pinned = 0
    for name, module in list(sys.modules.items()):
        if not name.startswith("mamba_ssm.ops.triton") or not isinstance(module, ModuleType):
            continue
        for obj in vars(module).values():
            if isinstance(obj, Autotuner) and len(obj.configs) > 1:
                obj.configs = [max(obj.configs, key=_block_volume)]
                pinned += 1
    return pinned


@contextlib.contextmanager
def cpu_shims():
    """torch.cuda.device / get_device_properties stand-ins for the kernels' wrappers (restored on exit)."""
    saved = torch.cuda.device, torch.cuda.get_device_properties
    torch.cuda.device = lambda index=None: contextlib.nullcontext()
    torch.cuda.get_device_properties = lambda *args, **kwargs: SimpleNamespace(
        multi_processor_count=4, name="triton-interpreter", gcnArchName=""
    )
    try:
        yield
    finally:
        torch.cuda.device, torch.cuda.get_device_properties = saved


def install() -> SimpleNamespace:
    """Import the kernels through vamba's loader (TRITON_INTERPRET must already be set) and pin their configs.

    Returns the loaded kernel table. Raises RuntimeError when TRITON_INTERPRET is unset (the kernels would be
    compiled for a GPU) or the kernels do not import.
    """
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("the kernel lane needs TRITON_INTERPRET=1 before triton is imported")
    from vamba.modeling.mamba_fused import load_kernels

    kernels = load_kernels()
    if kernels is None:
        raise RuntimeError("mamba_ssm's Triton kernels do not import although triton and mamba_ssm are installed")
    pin_autotune_configs()
    return kernels


@pytest.fixture(scope="session", name="kernels")
def kernels_fixture():
    """The kernel table of vamba's loader, with the CPU shims active while the tests run."""
    with cpu_shims():
        yield install()


# ----------------------------------------------------------------------------------------------------------------
# causal-conv1d stand-ins
# ----------------------------------------------------------------------------------------------------------------

_FLOAT_TYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise RuntimeError(message)  # TORCH_CHECK raises RuntimeError


def check_conv_args(x, weight, bias, seq_idx, initial_states) -> bool:
    """causal_conv1d_fwd's checks (csrc/causal_conv1d.cpp); returns whether x is in channel-last layout."""
    _check(x.dtype in _FLOAT_TYPES and weight.dtype in _FLOAT_TYPES, "causal_conv1d: float, half or bf16 only")
    batch, dim, seqlen = x.shape
    width = weight.shape[-1]
    _check(tuple(weight.shape) == (dim, width), "weight must have shape (dim, width)")
    _check(x.stride(2) == 1 or x.stride(1) == 1, "x must be contiguous along channels or along length")
    channel_last = x.stride(1) == 1 and x.stride(2) > 1
    if channel_last:
        _check(dim % 8 == 0, "causal_conv1d only supports channel dimension divisible by 8 for now")
        _check(x.stride(2) % 8 == 0 and x.stride(0) % 8 == 0,
               "causal_conv1d with channel last layout requires strides (x.stride(0) and x.stride(2)) to be "
               "multiples of 8")
    _check(2 <= width <= 4, "causal_conv1d only supports width between 2 and 4")
    if bias is not None:
        _check(bias.dtype == weight.dtype and bias.stride(-1) == 1 and tuple(bias.shape) == (dim,),
               "bias must match the weight's dtype, be contiguous and have shape (dim,)")
    if seq_idx is not None:
        _check(channel_last, "seq_idx is only supported for channel last layout")
        _check(seq_idx.dtype == torch.int32 and seq_idx.is_contiguous()
               and tuple(seq_idx.shape) == (batch, seqlen), "seq_idx must be contiguous int32 (batch, seqlen)")
    if initial_states is not None:
        _check(channel_last, "initial_states is only supported for channel last layout")
        _check(initial_states.dtype == x.dtype, "initial_states must have x's dtype")
        _check(tuple(initial_states.shape) == (batch, dim, width - 1), "initial_states must be (batch, dim, width-1)")
        _check(initial_states.stride(1) == 1, "initial_states must be channel-last (stride 1 along channels)")
    return channel_last


def conv_reference(x, weight, bias, seq_idx, initial_states, silu: bool) -> torch.Tensor:
    """Depthwise causal conv (b, d, l) -> (b, d, l) in float32, as causal-conv1d computes it: taps before the start
    of the row (or of the token's sequence, with seq_idx) read initial_states or zero."""
    batch, dim, seqlen = x.shape
    width = weight.shape[-1]
    xf = x.float()
    left = initial_states.float() if initial_states is not None else xf.new_zeros(batch, dim, width - 1)
    windows = torch.cat([left, xf], dim=-1).unfold(-1, width, 1)  # (b, d, l, width)
    if seq_idx is not None:
        seq = torch.cat([seq_idx.new_full((batch, width - 1), -1), seq_idx], dim=1).unfold(-1, width, 1)
        windows = windows * (seq == seq_idx[..., None])[:, None].float()
    out = (windows * weight.float()[None, :, None, :]).sum(-1)
    if bias is not None:
        out = out + bias.float()[None, :, None]
    return F.silu(out) if silu else out


class _CausalConv1dFn(torch.autograd.Function):
    """causal_conv1d_fn stand-in (causal_conv1d_interface.CausalConv1dFn with the CUDA calls replaced)."""

    @staticmethod
    def forward(ctx, x, weight, bias, seq_idx, initial_states, activation):
        if activation not in (None, "silu", "swish"):
            raise NotImplementedError("activation must be None, silu, or swish")
        if x.stride(2) != 1 and x.stride(1) != 1:
            x = x.contiguous()
        bias = bias.contiguous() if bias is not None else None
        if seq_idx is not None:
            assert initial_states is None, "initial_states must be None if seq_idx is not None"
        seq_idx = seq_idx.contiguous() if seq_idx is not None else None
        if initial_states is not None and initial_states.stride(2) != 1 and initial_states.stride(1) != 1:
            initial_states = initial_states.contiguous()
        check_conv_args(x, weight, bias, seq_idx, initial_states)
        ctx.silu = activation in ("silu", "swish")
        # Saved as the real function saves them: modifying any of them in place before backward is an error.
        ctx.save_for_backward(x, weight, bias, seq_idx, initial_states)
        out = torch.empty_like(x)
        return out.copy_(conv_reference(x, weight, bias, seq_idx, initial_states, ctx.silu))

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias, seq_idx, initial_states = ctx.saved_tensors
        dx, dweight, dbias, dinit = _conv_grads(x, weight, bias, dout, seq_idx, initial_states, ctx.silu)
        return dx, dweight, dbias, None, dinit, None


def _conv_grads(x, weight, bias, dout, seq_idx, initial_states, silu):
    leaves = [t.detach().requires_grad_() if t is not None else None for t in (x, weight, bias, initial_states)]
    with torch.enable_grad():
        out = conv_reference(leaves[0], leaves[1], leaves[2], seq_idx, leaves[3], silu)
        wanted = [t for t in leaves if t is not None]
        grads = iter(torch.autograd.grad(out, wanted, dout.float()))
    return tuple(None if t is None else next(grads).to(t.dtype) for t in leaves)


def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                     final_states_out=None, activation=None):
    """Stand-in for causal_conv1d.causal_conv1d_fn (return_final_states is not used by vamba: rejected)."""
    if return_final_states or final_states_out is not None:
        raise NotImplementedError("stand-in: final states are not used by vamba")
    return _CausalConv1dFn.apply(x, weight, bias, seq_idx, initial_states, activation)


def causal_conv1d_fwd_function(x, weight, bias, seq_idx, initial_states, final_states_out, silu_activation):
    """Stand-in for causal_conv1d.cpp_functions.causal_conv1d_fwd_function (no autograd: mamba_ssm's fused
    kernel calls it inside its own autograd function)."""
    assert final_states_out is None, "stand-in: final states are not used by mamba_ssm's fused kernel"
    check_conv_args(x, weight, bias, seq_idx, initial_states)
    return torch.empty_like(x).copy_(conv_reference(x, weight, bias, seq_idx, initial_states, silu_activation))


def causal_conv1d_bwd_function(x, weight, bias, dout, seq_idx, initial_states, dfinal_states, dx,
                               return_dinitial_states, silu_activation):
    """Stand-in for causal_conv1d.cpp_functions.causal_conv1d_bwd_function: fills `dx` in place when given, returns
    (dx, dweight, dbias, dinitial_states) with dweight/dbias in the parameters' dtype."""
    assert dfinal_states is None and not return_dinitial_states, "stand-in: not used by mamba_ssm's fused kernel"
    channel_last = check_conv_args(x, weight, bias, seq_idx, initial_states)
    if channel_last and dout.stride(1) != 1:
        dout = dout.transpose(-1, -2).contiguous().transpose(-1, -2)
    if not channel_last and dout.stride(2) != 1:
        dout = dout.contiguous()
    if channel_last:
        _check(dout.stride(2) % 8 == 0 and dout.stride(0) % 8 == 0,
               "causal_conv1d with channel last layout requires strides (dout.stride(0) and dout.stride(2)) to be "
               "multiples of 8")
    gx, gw, gb, _ = _conv_grads(x, weight, bias, dout, seq_idx, initial_states, silu_activation)
    if dx is None:
        dx = torch.empty_like(x)
    else:
        _check(dx.dtype == x.dtype and dx.shape == x.shape, "dx must match x")
        _check(dx.stride(1 if channel_last else 2) == 1, "dx must have x's layout")
    dx.copy_(gx)
    return dx, gw, gb, None


@contextlib.contextmanager
def conv1d_present(kernels: SimpleNamespace):
    """While active, mamba_ssm's fused kernel finds causal-conv1d (the stand-ins) as when the package is installed;
    yields the ``causal_conv1d_fn`` stand-in for the mixers' kernel table."""
    ssd = kernels.ssd_combined
    saved = ssd.causal_conv1d_fwd_function, ssd.causal_conv1d_bwd_function
    ssd.causal_conv1d_fwd_function, ssd.causal_conv1d_bwd_function = (causal_conv1d_fwd_function,
                                                                      causal_conv1d_bwd_function)
    try:
        yield causal_conv1d_fn
    finally:
        ssd.causal_conv1d_fwd_function, ssd.causal_conv1d_bwd_function = saved
