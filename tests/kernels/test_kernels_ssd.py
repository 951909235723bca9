"""mamba_ssm's Triton kernels (under Triton's interpreter) against vamba's pure-PyTorch functions they stand for.

The SSD scan `mamba_chunk_scan_combined` vs `vamba.modeling.ssd.ssd_chunk_scan`, mamba_ssm's gated RMSNorm vs
`GatedRMSNorm`, and `selective_state_update` (one decoding step) vs a one-token scan from the same state; forward
and backward, float32 and float16 (bf16 `tl.dot` is wrong in the interpreter, a known Triton issue).
"""

from __future__ import annotations

import pytest
import torch
from kernel_harness import extra_present, kernels_fixture, rel_err  # noqa: F401 (fixture)

if not extra_present():
    pytest.skip("optional `cuda` extra (triton + mamba_ssm) absent", allow_module_level=True)

from vamba.modeling.mamba2 import GatedRMSNorm  # noqa: E402
from vamba.modeling.ssd import ssd_chunk_scan  # noqa: E402

# Output / gradient tolerances (max |diff| / max |reference|): float32 agrees to ~1e-6; float16 inputs are rounded
# the same way on both sides, the remaining difference is the kernels' half-precision intermediates.
TOL = {torch.float32: 1e-4, torch.float16: 2e-2}


def _seq_idx(rows: list[list[int]]) -> torch.Tensor:
    return torch.stack([torch.cat([torch.full((n,), i, dtype=torch.int32) for i, n in enumerate(r)]) for r in rows])


def _scan_inputs(dtype, batch, seqlen, heads, headdim, groups, dstate, D_hdim: bool, z: bool, seed: int):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g)).to(dtype).requires_grad_()

    inputs = {
        "x": rand(batch, seqlen, heads, headdim),
        "dt": rand(batch, seqlen, heads, scale=0.5),
        "A": (-torch.rand(heads, generator=g) * 4 - 0.5).requires_grad_(),  # float32, as the mixers pass it
        "B": rand(batch, seqlen, groups, dstate),
        "C": rand(batch, seqlen, groups, dstate),
        "D": (torch.randn(heads, headdim, generator=g) if D_hdim else torch.randn(heads, generator=g)).requires_grad_(),
        "dt_bias": (torch.randn(heads, generator=g) - 1).requires_grad_(),
        "initial_states": torch.randn(batch, heads, headdim, dstate, generator=g).requires_grad_(),
    }
    if z:
        inputs["z"] = rand(batch, seqlen, heads, headdim)
    return inputs


def _run_scan(fn, inputs, chunk, seq_idx, dt_limit, seed):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    limit = {} if dt_limit is None else {"dt_limit": dt_limit}
    y, final = fn(
        leaves["x"], leaves["dt"], leaves["A"], leaves["B"], leaves["C"], chunk, D=leaves["D"], z=leaves.get("z"),
        dt_bias=leaves["dt_bias"], dt_softplus=True, seq_idx=seq_idx, initial_states=leaves["initial_states"],
        return_final_states=True, **limit,
    )
    g = torch.Generator().manual_seed(seed + 1)
    loss = (y.float() * torch.randn(y.shape, generator=g)).sum() + (final * torch.randn(final.shape, generator=g)).sum()
    loss.backward()
    return y, final, {k: v.grad for k, v in leaves.items()}


CASES = {
    # name: (batch, seqlen, heads, headdim, groups, dstate, chunk, D (h, p)?, z?, dt_limit, seq_idx rows)
    "packed-ngroups2-initial-states": (1, 70, 2, 16, 2, 16, 32, False, False, None, [[20, 35, 15]]),
    "D-hdim-z-dt_limit": (1, 45, 2, 16, 1, 16, 32, True, True, (0.05, 0.6), None),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", list(CASES))
def test_chunk_scan_combined_matches_ssd_chunk_scan(kernels, case: str, dtype: torch.dtype) -> None:
    """Forward (y, final state) and every input's gradient, with lengths not a multiple of the chunk."""
    batch, seqlen, heads, headdim, groups, dstate, chunk, D_hdim, z, dt_limit, rows = CASES[case]
    inputs = _scan_inputs(dtype, batch, seqlen, heads, headdim, groups, dstate, D_hdim, z, seed=len(case))
    seq_idx = _seq_idx(rows) if rows else None
    y_k, final_k, grads_k = _run_scan(kernels.mamba_chunk_scan_combined, inputs, chunk, seq_idx, dt_limit, 3)
    # The reference runs in float32 from the same (rounded) inputs.
    ref_inputs = {k: v.detach().float() for k, v in inputs.items()}
    y_r, final_r, grads_r = _run_scan(ssd_chunk_scan, ref_inputs, chunk, seq_idx, dt_limit, 3)
    assert y_k.dtype == dtype and final_k.dtype == torch.float32
    assert rel_err(y_k, y_r) < TOL[dtype]
    assert rel_err(final_k, final_r) < TOL[dtype]
    for name in grads_r:
        assert rel_err(grads_k[name], grads_r[name]) < TOL[dtype], name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("ngroups", [1, 2])
def test_gated_rmsnorm_matches(kernels, ngroups: int, dtype: torch.dtype) -> None:
    """mamba_ssm's rmsnorm_fn (norm_before_gate=False) = our GatedRMSNorm, forward and backward."""
    torch.manual_seed(ngroups)
    hidden = 96
    norm = GatedRMSNorm(hidden, group_size=hidden // ngroups, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(hidden))
    x = torch.randn(3, 7, hidden).to(dtype).requires_grad_()
    z = torch.randn(3, 7, hidden).to(dtype).requires_grad_()
    out_k = kernels.rmsnorm_fn(x, norm.weight, None, z=z, eps=norm.eps, group_size=norm.group_size,
                               norm_before_gate=False)
    dout = torch.randn(out_k.shape)
    gx_k, gz_k, gw_k = torch.autograd.grad(out_k, (x, z, norm.weight), dout.to(dtype))
    xr, zr = x.detach().float().requires_grad_(), z.detach().float().requires_grad_()
    out_r = norm(xr, zr)
    gx_r, gz_r, gw_r = torch.autograd.grad(out_r, (xr, zr, norm.weight), dout)
    assert out_k.dtype == dtype
    for got, want in ((out_k, out_r), (gx_k, gx_r), (gz_k, gz_r), (gw_k, gw_r)):
        assert rel_err(got, want) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_selective_state_update_is_one_scan_step(kernels, dtype: torch.dtype) -> None:
    """The decoding kernel, fed per-head A/dt/D broadcast over headdim as mamba_ssm's Mamba2.step does, gives the
    output and the new state of a one-token scan from the same state."""
    batch, heads, headdim, groups, dstate = 2, 4, 16, 2, 16
    inputs = _scan_inputs(dtype, batch, 1, heads, headdim, groups, dstate, False, False, seed=11)
    inp = {k: v.detach() for k, v in inputs.items()}
    state = inp["initial_states"].clone()
    y_k = kernels.selective_state_update(
        state, inp["x"][:, 0], inp["dt"][:, 0, :, None].expand(-1, -1, headdim),
        inp["A"][:, None, None].expand(heads, headdim, dstate), inp["B"][:, 0], inp["C"][:, 0],
        D=inp["D"][:, None].expand(heads, headdim), dt_bias=inp["dt_bias"][:, None].expand(heads, headdim),
        dt_softplus=True,
    )
    f = {k: v.float() for k, v in inp.items()}
    y_r, state_r = ssd_chunk_scan(f["x"], f["dt"], f["A"], f["B"], f["C"], 8, D=f["D"], dt_bias=f["dt_bias"],
                                  dt_softplus=True, initial_states=f["initial_states"], return_final_states=True)
    assert rel_err(y_k, y_r[:, 0]) < TOL[dtype]
    assert rel_err(state, state_r) < TOL[dtype]
