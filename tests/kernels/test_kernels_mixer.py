"""The mixers forced onto their fused path (mamba_ssm's kernels under Triton's interpreter) against their own
pure-PyTorch path: whole and packed sequences, streaming in uneven pieces with seq_idx continuing across pieces,
a one-token decoding step, and backward through all of these; with causal-conv1d absent (as on this machine and
on GPUs without the package) and present (checked stand-ins, see kernel_harness).

Also the three defects this lane found in the fused path (each test below failed before its fix):
- backward through streaming: the SSM state given to the kernel as initial_states (saved for backward) was then
  updated in place; the same for the conv state given to causal-conv1d when d_conv = 2;
- mamba_ssm installed without causal-conv1d: the no-state path crashed inside mamba_split_conv1d_scan_combined;
- conv channels not a multiple of 8: the fused paths crashed (causal-conv1d's channel-last layout needs it).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from kernel_harness import conv1d_present, extra_present, kernels_fixture, rel_err  # noqa: F401 (fixture)

if not extra_present():
    pytest.skip("optional `cuda` extra (triton + mamba_ssm) absent", allow_module_level=True)

from vamba.modeling.mamba2 import Mamba1Mixer, Mamba2Mixer, selective_scan  # noqa: E402
from vamba.modeling.mamba_fused import fused_on_cpu  # noqa: E402

D_MODEL, HEADDIM, CHUNK = 16, 16, 32  # d_inner 32: 2 heads; few heads and chunks keep the interpreter quick
TOL = 1e-4  # float32; the kernels agree with the pure path to ~1e-6


def _mixer(seed: int, d_state: int = 16, **kwargs) -> Mamba2Mixer:
    torch.manual_seed(seed)
    mixer = Mamba2Mixer(D_MODEL, d_state=d_state, headdim=HEADDIM, chunk_size=CHUNK, **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # move constant-initialised parameters off their defaults, so ignoring one would show
        mixer.D.copy_(1 + 0.5 * torch.randn(mixer.D.shape, generator=g))
        mixer.norm.weight.copy_(1 + 0.5 * torch.randn(mixer.norm.weight.shape, generator=g))
        mixer.dt_bias.copy_(torch.randn(mixer.dt_bias.shape, generator=g) - 2)
    return mixer


def _seq_idx(lengths: list[int]) -> torch.Tensor:
    return torch.cat([torch.full((n,), i, dtype=torch.int32) for i, n in enumerate(lengths)])[None]


@contextlib.contextmanager
def _fused(kernels, conv1d: bool):
    """The fused path on CPU, with causal-conv1d absent (the real state of this machine) or present (stand-ins)."""
    if not conv1d:
        with fused_on_cpu(causal_conv1d_fn=None) as table:
            yield table
        return
    with conv1d_present(kernels) as conv_fn, fused_on_cpu(causal_conv1d_fn=conv_fn) as table:
        yield table


def _run(mixer, x, calls) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run `calls(mixer, x)` (-> output), backprop a fixed random projection; returns output and gradients."""
    mixer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    out = calls(mixer, x)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(99))
    (out * weight).sum().backward()
    grads = {name: p.grad.clone() for name, p in mixer.named_parameters()}
    grads["input"] = x.grad.clone()
    return out.detach(), grads


def _assert_same(fused, pure, tol=TOL) -> None:
    (out_f, grads_f), (out_p, grads_p) = fused, pure
    assert rel_err(out_f, out_p) < tol
    for name, g in grads_p.items():
        assert grads_f[name] is not None and rel_err(grads_f[name], g) < tol, name


def _whole_and_packed(mixer, x):
    seq_idx = _seq_idx([15, 25])
    return torch.cat([mixer(x), mixer(x, seq_idx=seq_idx)], dim=1)


PIECES = ((0, 2), (2, 19), (19, 45))  # the first shorter than d_conv - 1; boundaries on and off sequence starts


def _streamed(mixer, x, seq_idx=None):
    state = mixer.allocate_state(x.shape[0])
    outs = [mixer(x[:, a:b], seq_idx=seq_idx[:, a:b] if seq_idx is not None else None, state=state)
            for a, b in PIECES]
    return torch.cat(outs + [state.ssm_state.flatten(1)[:, None, : x.shape[-1]]], dim=1)


@pytest.mark.parametrize("conv1d", [False, True], ids=["no-causal-conv1d", "causal-conv1d"])
def test_whole_and_packed_sequences(kernels, conv1d: bool) -> None:
    """Without causal-conv1d this failed before the fix (the fused kernel needs it); with it, it is the one fused
    kernel mamba_split_conv1d_scan_combined."""
    mixer = _mixer(0)
    x = torch.randn(1, 40, D_MODEL)
    pure = _run(mixer, x, _whole_and_packed)
    with _fused(kernels, conv1d):
        fused = _run(mixer, x, _whole_and_packed)
    _assert_same(fused, pure)


@pytest.mark.parametrize("conv1d", [False, True], ids=["no-causal-conv1d", "causal-conv1d"])
def test_streamed_pieces_with_continuing_seq_idx(kernels, conv1d: bool) -> None:
    """Sequences [0, 10), [10, 24), [24, 45) numbered across pieces (19 cuts a sequence, 2 is inside one):
    outputs, final state and gradients equal the pure path's. Backward failed before the fix."""
    mixer = _mixer(1, ngroups=2)
    x = torch.randn(1, 45, D_MODEL)
    seq_idx = _seq_idx([10, 14, 21])
    pure = _run(mixer, x, lambda m, x: _streamed(m, x, seq_idx))
    with _fused(kernels, conv1d):
        fused = _run(mixer, x, lambda m, x: _streamed(m, x, seq_idx))
    _assert_same(fused, pure)


def test_streamed_with_causal_conv1d_and_d_conv_2(kernels) -> None:
    """causal-conv1d takes the conv state as initial_states (no seq_idx); with d_conv = 2 the channel-last copy of
    the state was a view of it, saved for backward and then updated in place. Failed before the fix."""
    mixer = _mixer(2, d_conv=2)
    x = torch.randn(1, 45, D_MODEL)
    pure = _run(mixer, x, _streamed)
    with _fused(kernels, conv1d=True):
        fused = _run(mixer, x, _streamed)
    _assert_same(fused, pure)


def test_conv_channels_not_a_multiple_of_8(kernels) -> None:
    """conv_dim = 32 + 2 * 10 = 52: causal-conv1d (and so the one fused kernel) cannot take it; the fused path uses
    the PyTorch conv instead. Crashed before the fix."""
    mixer = _mixer(3, d_state=10)
    assert mixer.conv_dim % 8
    x = torch.randn(1, 40, D_MODEL)

    def both(m, x):
        return torch.cat([m(x), _streamed(m, x)], dim=1)

    pure = _run(mixer, x, both)
    with _fused(kernels, conv1d=True):
        fused = _run(mixer, x, both)
    _assert_same(fused, pure)


@pytest.mark.parametrize("conv1d", [False, True], ids=["no-causal-conv1d", "causal-conv1d"])
def test_one_token_decoding_steps(kernels, conv1d: bool) -> None:
    """Streaming token by token without autograd (decoding) goes through selective_state_update: output and state
    after each step equal the pure path's."""
    mixer = _mixer(4)
    x = torch.randn(2, 6, D_MODEL)
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return kernels.selective_state_update(*args, **kwargs)

    with torch.no_grad():
        state = mixer.allocate_state(2)
        pure = [mixer(x[:, t : t + 1], state=state) for t in range(6)]
        with _fused(kernels, conv1d) as table, fused_on_cpu(**{**vars(table), "selective_state_update": counted}):
            state_f = mixer.allocate_state(2)
            fused = [mixer(x[:, t : t + 1], state=state_f) for t in range(6)]
    assert len(calls) == 6
    assert rel_err(torch.cat(fused, 1), torch.cat(pure, 1)) < TOL
    assert rel_err(state_f.ssm_state, state.ssm_state) < TOL
    assert torch.allclose(state_f.conv_state, state.conv_state)


def test_piecewise_inference_on_the_fused_path(kernels) -> None:
    """Without autograd, inputs longer than inference_piece_len stream through the fused path piece by piece."""
    mixer = _mixer(8)
    x = torch.randn(1, 40, D_MODEL)
    seq_idx = _seq_idx([15, 25])
    with torch.no_grad():
        whole = mixer(x, seq_idx=seq_idx)
        mixer.inference_piece_len = 13
        with _fused(kernels, conv1d=False):
            pieces = mixer(x, seq_idx=seq_idx)
    assert rel_err(pieces, whole) < TOL


def test_float16_whole_and_packed(kernels) -> None:
    """Half precision through the one fused kernel, against the float32 pure path of the same weights."""
    mixer = _mixer(5)
    x = torch.randn(1, 40, D_MODEL)
    pure = _run(mixer, x, _whole_and_packed)
    half = _mixer(5).half()
    with _fused(kernels, conv1d=True):
        out, grads = _run(half, x.half(), _whole_and_packed)
    assert out.dtype == torch.float16
    _assert_same((out, grads), pure, tol=3e-2)


# ------------------------------------------------------------------------------------------------------------
# Mamba-1: our call of selective_scan_fn, checked with mamba_ssm's own selective_scan_ref (same signature)
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def selective_scan_ref():
    """mamba_ssm's selective_scan_ref. Its module imports the CUDA extension selective_scan_cuda at top level (the
    reference itself is PyTorch), so it is imported with an empty stand-in for the extension, removed afterwards."""
    import sys
    import types

    saved = {name: sys.modules.get(name) for name in ("selective_scan_cuda", "mamba_ssm.ops.selective_scan_interface")}
    sys.modules["selective_scan_cuda"] = types.ModuleType("selective_scan_cuda")
    sys.modules.pop("mamba_ssm.ops.selective_scan_interface", None)
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref as ref
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return ref


def test_selective_scan_matches_reference(selective_scan_ref) -> None:
    torch.manual_seed(6)
    b, l, d, n = 2, 13, 8, 4
    u, delta, z = torch.randn(b, l, d), torch.randn(b, l, d), torch.randn(b, l, d)
    A, B, C = -torch.rand(d, n) - 0.1, torch.randn(b, l, n), torch.randn(b, l, n)
    D, bias = torch.randn(d), torch.randn(d)
    ours = selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=bias)
    theirs = selective_scan_ref(u.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2),
                                D=D, z=z.transpose(1, 2), delta_bias=bias, delta_softplus=True)
    assert rel_err(ours, theirs.transpose(1, 2)) < 1e-5


@pytest.mark.parametrize("conv1d", [False, True], ids=["no-causal-conv1d", "causal-conv1d"])
def test_mamba1_fused_call(kernels, selective_scan_ref, conv1d: bool) -> None:
    torch.manual_seed(7)
    mixer = Mamba1Mixer(D_MODEL, d_state=8)
    with torch.no_grad():
        mixer.D.copy_(1 + 0.5 * torch.randn(mixer.D.shape))
    x = torch.randn(2, 21, D_MODEL)
    pure = _run(mixer, x, lambda m, x: m(x))
    with _fused(kernels, conv1d) as table:
        with fused_on_cpu(**{**vars(table), "selective_scan_fn": selective_scan_ref}):
            fused = _run(mixer, x, lambda m, x: m(x))
    _assert_same(fused, pure, tol=1e-5)
