"""Tests for the Mamba mixers' pure-PyTorch path: parity with transformers, init, packing, streaming, Mamba-1."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vamba.modeling.mamba2 import Mamba1Mixer, Mamba2Mixer, Mamba2State, build_mixer

D_MODEL, HEADDIM, D_STATE, CHUNK = 32, 8, 16, 8


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def _randomize_ssm_params(module: torch.nn.Module, seed: int) -> None:
    """Move parameters that init sets to constants (D, norm weight, conv bias...) off their defaults, so that a
    mixer that ignored one of them would fail the comparisons."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in ("D", "norm.weight", "conv1d.bias"):
                p.copy_(1.0 + 0.5 * torch.randn(p.shape, generator=g))
            elif name == "A_log":
                p.copy_(torch.log(torch.rand(p.shape, generator=g) * 15 + 1))
            elif name == "dt_bias":
                p.copy_(torch.randn(p.shape, generator=g) - 2.0)


def _seq_idx(lengths: list[int]) -> torch.Tensor:
    return torch.cat([torch.full((n,), i, dtype=torch.int32) for i, n in enumerate(lengths)])


def _mixer(seed: int = 0, ngroups: int = 1, **kwargs) -> Mamba2Mixer:
    torch.manual_seed(seed)
    mixer = Mamba2Mixer(D_MODEL, d_state=D_STATE, headdim=HEADDIM, ngroups=ngroups, chunk_size=CHUNK, **kwargs)
    _randomize_ssm_params(mixer, seed)
    return mixer


# ------------------------------------------------------------------------------------------------------------
# (a) parity with transformers' Mamba2Mixer (torch path)
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ngroups", [1, 2])
@pytest.mark.parametrize("seqlen", [16, 21, 67])
def test_matches_transformers_mamba2_mixer(ngroups: int, seqlen: int) -> None:
    from transformers import Mamba2Config
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer as HFMamba2Mixer

    config = Mamba2Config(
        hidden_size=D_MODEL, num_heads=2 * D_MODEL // HEADDIM, head_dim=HEADDIM, state_size=D_STATE,
        n_groups=ngroups, conv_kernel=4, chunk_size=CHUNK, expand=2, use_bias=False, use_conv_bias=True,
        layer_norm_epsilon=1e-5, num_hidden_layers=1,
    )
    torch.manual_seed(seqlen)
    theirs = HFMamba2Mixer(config, layer_idx=0).eval()  # eval: training mode may take a fused-kernel branch
    _randomize_ssm_params(theirs, seqlen)
    ours = Mamba2Mixer(D_MODEL, d_state=D_STATE, headdim=HEADDIM, ngroups=ngroups, chunk_size=CHUNK)

    their_shapes = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert our_shapes == their_shapes
    ours.load_state_dict(theirs.state_dict(), strict=True)

    x = torch.randn(2, seqlen, D_MODEL)
    with torch.no_grad():
        expected = theirs(x)
        got = ours(x)
    assert got.shape == x.shape
    assert _rel_err(got, expected) < 1e-4


# ------------------------------------------------------------------------------------------------------------
# (b) initialisation
# ------------------------------------------------------------------------------------------------------------


def test_init_statistics() -> None:
    torch.manual_seed(0)
    mixer = Mamba2Mixer(512, d_state=4, headdim=4, chunk_size=CHUNK)  # 256 heads: enough samples for statistics
    A = torch.exp(mixer.A_log.detach())
    dt = F.softplus(mixer.dt_bias.detach())
    assert A.min() >= 1.0 and A.max() <= 16.0
    assert A.max() - A.min() > 10.0  # uniform over [1, 16], not a constant
    assert dt.min() >= 0.001 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    # Log-uniform: the median of log(dt) sits near the middle of [log 0.001, log 0.1] = log 0.01.
    assert abs(float(dt.log().median()) - math.log(0.01)) < 0.7
    assert torch.equal(mixer.D.detach(), torch.ones(mixer.nheads))
    assert torch.equal(mixer.norm.weight.detach(), torch.ones(mixer.d_inner))
    assert all(getattr(p, "_no_weight_decay", False) for p in (mixer.A_log, mixer.D, mixer.dt_bias))
    assert mixer.in_proj.bias is None and mixer.out_proj.bias is None and mixer.conv1d.bias is not None


def test_dt_floor_and_reset_parameters() -> None:
    torch.manual_seed(0)
    mixer = Mamba2Mixer(512, d_state=4, headdim=4, dt_min=1e-6, dt_max=1e-3, dt_init_floor=1e-4)
    dt = F.softplus(mixer.dt_bias.detach().double())
    assert dt.min() >= 1e-4 * (1 - 1e-4)
    assert (dt < 1.001e-4).sum() > 10  # most draws are below the floor and land on it

    _randomize_ssm_params(mixer, 3)
    with torch.no_grad():
        mixer.out_proj.weight.zero_()
    mixer.reset_parameters()
    assert torch.equal(mixer.D.detach(), torch.ones(mixer.nheads))
    assert torch.equal(mixer.norm.weight.detach(), torch.ones(mixer.d_inner))
    A = torch.exp(mixer.A_log.detach())
    assert A.min() >= 1.0 and A.max() <= 16.0
    assert F.softplus(mixer.dt_bias.detach().double()).min() >= 1e-4 * (1 - 1e-4)
    assert mixer.out_proj.weight.abs().sum() > 0


# ------------------------------------------------------------------------------------------------------------
# (c) packed sequences
# ------------------------------------------------------------------------------------------------------------


def test_packed_row_equals_separate_runs() -> None:
    mixer = _mixer(1, ngroups=2)
    # Row 0: boundaries at 16 (a chunk boundary) and 21 (inside a chunk); row 1: a different packing.
    packings = [[16, 5, 20], [7, 30, 4]]
    seq_idx = torch.stack([_seq_idx(p) for p in packings])
    x = torch.randn(2, 41, D_MODEL)
    with torch.no_grad():
        packed = mixer(x, seq_idx=seq_idx)
        unpacked = mixer(x)
        for row, lengths in enumerate(packings):
            start = 0
            for n in lengths:
                alone = mixer(x[row:row + 1, start:start + n])
                assert _rel_err(packed[row:row + 1, start:start + n], alone) < 1e-5
                start += n
    # Sanity: packing changes the output (otherwise the test above would be vacuous).
    assert _rel_err(packed, unpacked) > 1e-3


# ------------------------------------------------------------------------------------------------------------
# (d) streaming with Mamba2State
# ------------------------------------------------------------------------------------------------------------


def test_streaming_in_uneven_pieces_equals_full_forward() -> None:
    mixer = _mixer(2).double()
    x = torch.randn(2, 49, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        full = mixer(x)
        full_state = mixer.allocate_state(2)
        mixer(x, state=full_state)
        state = mixer.allocate_state(2)
        outs = []
        # The first piece is shorter than d_conv - 1, so the conv state must mix old state and new inputs.
        for start, end in ((0, 2), (2, 19), (19, 49)):
            outs.append(mixer(x[:, start:end], state=state))
    assert isinstance(state, Mamba2State)
    assert _rel_err(torch.cat(outs, dim=1), full) < 1e-10
    assert _rel_err(state.ssm_state, full_state.ssm_state) < 1e-10
    assert state.conv_state.shape == (2, mixer.conv_dim, 3) and state.ssm_state.shape == (2, 8, HEADDIM, D_STATE)
    # conv_state holds the last d_conv - 1 pre-conv inputs, i.e. the (x, B, C) part of in_proj of the last tokens.
    xbc = mixer.in_proj(x[:, -3:])[..., mixer.d_inner:mixer.d_inner + mixer.conv_dim]
    assert torch.allclose(state.conv_state, xbc.transpose(1, 2))


def test_streaming_packed_rows_equals_full_forward() -> None:
    mixer = _mixer(3)
    # Sequences [0, 10), [10, 24), [24, 40) with ids numbered continuously across the pieces. Splits: 11 (a new
    # sequence began one token earlier: the conv state holds tokens of the previous sequence) and 24 (exactly at
    # a sequence start: the carried state must be dropped).
    seq_idx = _seq_idx([10, 14, 16])[None].expand(2, -1)
    x = torch.randn(2, 40, D_MODEL)
    with torch.no_grad():
        full = mixer(x, seq_idx=seq_idx)
        state = mixer.allocate_state(2)
        outs = [mixer(x[:, a:b], seq_idx=seq_idx[:, a:b], state=state) for a, b in ((0, 11), (11, 24), (24, 40))]
    assert _rel_err(torch.cat(outs, dim=1), full) < 1e-5
    assert torch.equal(state.last_seq_idx, torch.tensor([2, 2], dtype=torch.int32))


@pytest.mark.parametrize("piece", [8, 13])
def test_piecewise_inference_equals_whole(piece: int) -> None:
    """Without autograd, long inputs run piece by piece through the streaming state: same output and state."""
    mixer = _mixer(7, ngroups=2)
    seq_idx = torch.stack([_seq_idx([16, 5, 20]), _seq_idx([7, 26, 8])])  # boundaries at and off piece edges
    x = torch.randn(2, 41, D_MODEL)
    with torch.no_grad():
        mixer.inference_piece_len = 0
        whole_state = mixer.allocate_state(2)
        whole = mixer(x, seq_idx=seq_idx, state=whole_state)
        whole_plain = mixer(x)
        mixer.inference_piece_len = piece
        state = mixer.allocate_state(2)
        pieces = mixer(x, seq_idx=seq_idx, state=state)
        pieces_plain = mixer(x)
    assert _rel_err(pieces, whole) < 1e-5
    assert _rel_err(pieces_plain, whole_plain) < 1e-5
    assert _rel_err(state.ssm_state, whole_state.ssm_state) < 1e-5
    assert torch.allclose(state.conv_state, whole_state.conv_state, atol=1e-6)  # in_proj rounding differs by shape


def test_backward_runs_through_pure_path() -> None:
    mixer = _mixer(4)
    x = torch.randn(1, 23, D_MODEL, requires_grad=True)
    state = mixer.allocate_state(1)
    mixer(x[:, :10], state=state)
    out = mixer(x[:, 10:], seq_idx=torch.zeros(1, 13, dtype=torch.int32), state=state)
    out.square().sum().backward()
    for name, p in mixer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------------------------
# (e) Mamba-1 ablation mixer
# ------------------------------------------------------------------------------------------------------------


def _naive_mamba1(m: Mamba1Mixer, u: torch.Tensor) -> torch.Tensor:
    """Per-token float64 loop over mamba_ssm's Mamba (v1) block equations; u: (b, l, d_model)."""
    p = {k: v.detach().double() for k, v in m.named_parameters()}
    u = u.double()
    batch, seqlen, _ = u.shape
    width = p["conv1d.weight"].shape[-1]
    A = -torch.exp(p["A_log"])  # (d, n)
    out = torch.zeros(batch, seqlen, m.d_model, dtype=torch.float64)
    for b in range(batch):
        xz = u[b] @ p["in_proj.weight"].T  # (l, 2d)
        x, z = xz[:, : m.d_inner], xz[:, m.d_inner:]
        h = torch.zeros(m.d_inner, m.d_state, dtype=torch.float64)
        for t in range(seqlen):
            conv = p["conv1d.bias"].clone()
            for j in range(width):
                src = t - (width - 1) + j
                if src >= 0:
                    conv = conv + p["conv1d.weight"][:, 0, j] * x[src]
            xc = conv * torch.sigmoid(conv)
            proj = p["x_proj.weight"] @ xc
            dt_low, Bt, Ct = proj[: m.dt_rank], proj[m.dt_rank: m.dt_rank + m.d_state], proj[m.dt_rank + m.d_state:]
            delta = F.softplus(p["dt_proj.weight"] @ dt_low + p["dt_proj.bias"])  # (d,)
            h = torch.exp(delta[:, None] * A) * h + (delta * xc)[:, None] * Bt[None, :]
            y = h @ Ct + p["D"] * xc
            y = y * z[t] * torch.sigmoid(z[t])
            out[b, t] = p["out_proj.weight"] @ y
    return out


def test_mamba1_matches_naive_loop() -> None:
    torch.manual_seed(5)
    mixer = Mamba1Mixer(D_MODEL, d_state=8)
    _randomize_ssm_params(mixer, 5)
    mixer = mixer.double()
    x = torch.randn(2, 19, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        got = mixer(x)
    assert got.dtype == torch.float64
    assert _rel_err(got, _naive_mamba1(mixer, x)) < 1e-10


def test_mamba1_packed_equals_separate() -> None:
    torch.manual_seed(6)
    mixer = Mamba1Mixer(D_MODEL, d_state=8)
    _randomize_ssm_params(mixer, 6)
    lengths = [9, 2, 14]
    x = torch.randn(1, sum(lengths), D_MODEL)
    with torch.no_grad():
        packed = mixer(x, seq_idx=_seq_idx(lengths)[None])
        unpacked = mixer(x)
        start = 0
        for n in lengths:
            assert _rel_err(packed[:, start:start + n], mixer(x[:, start:start + n])) < 1e-5
            start += n
    assert _rel_err(packed, unpacked) > 1e-3


def test_mamba1_parameter_layout_and_init() -> None:
    mixer = Mamba1Mixer(40)  # dt_rank "auto" = ceil(40 / 16) = 3
    shapes = {k: tuple(v.shape) for k, v in mixer.state_dict().items()}
    assert shapes == {
        "A_log": (80, 16), "D": (80,), "in_proj.weight": (160, 40), "conv1d.weight": (80, 1, 4),
        "conv1d.bias": (80,), "x_proj.weight": (3 + 32, 80), "dt_proj.weight": (80, 3), "dt_proj.bias": (80,),
        "out_proj.weight": (40, 80),
    }
    assert torch.allclose(torch.exp(mixer.A_log[0]), torch.arange(1, 17, dtype=torch.float32))
    dt = F.softplus(mixer.dt_proj.bias.detach())
    assert dt.min() >= 0.001 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert mixer.dt_proj.weight.abs().max() <= 3**-0.5


# ------------------------------------------------------------------------------------------------------------
# (f) build_mixer
# ------------------------------------------------------------------------------------------------------------


def test_build_mixer() -> None:
    assert build_mixer("none", D_MODEL) is None
    assert isinstance(build_mixer("mamba2", D_MODEL, d_state=D_STATE, headdim=HEADDIM, layer_idx=3), Mamba2Mixer)
    assert isinstance(build_mixer("mamba1", D_MODEL, layer_idx=3), Mamba1Mixer)
    with pytest.raises(ValueError, match="mamba3"):
        build_mixer("mamba3", D_MODEL)


def test_kernel_request_falls_back_with_one_log_line(caplog, monkeypatch) -> None:
    """`use_kernels` on a CPU input, or on CUDA without mamba_ssm: the pure path, and one log line per process."""
    import logging
    from types import SimpleNamespace

    from vamba.modeling import mamba_fused

    mamba_fused._say_once.cache_clear()
    caplog.set_level(logging.INFO, logger=mamba_fused.__name__)
    mixer = Mamba2Mixer(D_MODEL, d_state=D_STATE, headdim=HEADDIM, chunk_size=CHUNK, use_kernels=True)
    x = torch.randn(1, 11, D_MODEL)
    with torch.no_grad():
        outs = [mixer(x), mixer(x)]
        mixer.use_kernels = False
        assert torch.equal(mixer(x), outs[0]) and torch.equal(outs[1], outs[0])
    assert [r.levelno for r in caplog.records if "not CUDA" in r.message] == [logging.INFO]
    monkeypatch.setattr(mamba_fused, "load_kernels", lambda: None)
    on_cuda = SimpleNamespace(is_cuda=True, device=torch.device("cuda"))
    assert mamba_fused.fused_kernels(True, on_cuda) is None and mamba_fused.fused_kernels(True, on_cuda) is None
    warned = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "mamba_ssm" in warned[0]
