"""Tests for the pure-PyTorch chunked SSD scan against a naive float64 recurrence."""

from __future__ import annotations

import pytest
import torch
from ssd_reference import naive_ssd_scan  # tests/ is on sys.path under pytest (no __init__.py)

from vamba.modeling.ssd import ssd_chunk_scan


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def _make_inputs(
    seed: int,
    batch: int,
    seqlen: int,
    nheads: int = 4,
    headdim: int = 3,
    ngroups: int = 1,
    dstate: int = 5,
    dtype: torch.dtype = torch.float64,
    softplus: bool = False,
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if softplus:
        dt = torch.randn(batch, seqlen, nheads, generator=g) - 1.0  # raw, goes through bias + softplus
    else:
        dt = torch.rand(batch, seqlen, nheads, generator=g) * 0.5 + 0.01  # already a positive step
    return dict(
        x=torch.randn(batch, seqlen, nheads, headdim, generator=g, dtype=dtype),
        dt=dt.to(dtype),
        # Strong and weak decays, so that both long-range and local terms matter.
        A=-(torch.rand(nheads, generator=g, dtype=dtype) * 3.0 + 0.05),
        B=torch.randn(batch, seqlen, ngroups, dstate, generator=g, dtype=dtype),
        C=torch.randn(batch, seqlen, ngroups, dstate, generator=g, dtype=dtype),
    )


def _seq_idx(batch: int, lengths: list[int]) -> torch.Tensor:
    ids = torch.cat([torch.full((n,), i, dtype=torch.int32) for i, n in enumerate(lengths)])
    return ids[None].expand(batch, -1).contiguous()


# (chunk_size, seqlen, ngroups, D kind, z, softplus + dt_bias, initial state, packed lengths or None)
CASES = [
    (4, 37, 1, None, False, False, False, None),
    (8, 50, 2, "h", True, True, False, None),
    (16, 23, 2, "hp", False, True, True, None),
    (8, 61, 1, "h", True, True, True, None),
    # 3 packed sequences: boundaries at 16 (a chunk boundary for chunk 8 and 4) and 16 + 13 = 29 (inside a chunk).
    (8, 45, 1, "h", False, True, True, [16, 13, 16]),
    (4, 45, 2, "hp", True, False, True, [16, 13, 16]),
    (16, 45, 2, None, True, True, True, [16, 13, 16]),
    # A sequence boundary right at the second token and a one-token sequence.
    (4, 22, 1, "h", False, False, True, [1, 1, 20]),
]


@pytest.mark.parametrize("max_block_elements", [1, None], ids=["one-chunk-per-group", "default-groups"])
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_chunked_scan_matches_naive_recurrence(case, max_block_elements) -> None:
    chunk_size, seqlen, ngroups, d_kind, use_z, softplus, use_init, lengths = case
    batch, nheads, headdim, dstate = 2, 4, 3, 5
    inp = _make_inputs(seqlen + chunk_size, batch, seqlen, nheads, headdim, ngroups, dstate, softplus=softplus)
    g = torch.Generator().manual_seed(1000 + seqlen)
    D = None
    if d_kind == "h":
        D = torch.randn(nheads, generator=g, dtype=torch.float64)
    elif d_kind == "hp":
        D = torch.randn(nheads, headdim, generator=g, dtype=torch.float64)
    z = torch.randn(batch, seqlen, nheads, headdim, generator=g, dtype=torch.float64) if use_z else None
    dt_bias = torch.randn(nheads, generator=g, dtype=torch.float64) if softplus else None
    init = torch.randn(batch, nheads, headdim, dstate, generator=g, dtype=torch.float64) if use_init else None
    seq_idx = _seq_idx(batch, lengths) if lengths is not None else None

    kwargs = {} if max_block_elements is None else {"max_block_elements": max_block_elements}
    y, final = ssd_chunk_scan(
        **inp, chunk_size=chunk_size, D=D, z=z, dt_bias=dt_bias, dt_softplus=softplus, seq_idx=seq_idx,
        initial_states=init, return_final_states=True, **kwargs,
    )
    y_ref, final_ref = naive_ssd_scan(
        **inp, D=D, z=z, dt_bias=dt_bias, dt_softplus=softplus, seq_idx=seq_idx, initial_states=init
    )
    assert y.dtype == torch.float64 and y.shape == (batch, seqlen, nheads, headdim)
    assert final.shape == (batch, nheads, headdim, dstate)
    assert _rel_err(y, y_ref) < 1e-8
    assert _rel_err(final, final_ref) < 1e-8


def test_dt_limit_is_applied() -> None:
    inp = _make_inputs(7, 1, 30, softplus=True)
    dt_bias = torch.full((4,), 0.5, dtype=torch.float64)
    limit = (0.2, 0.6)
    y = ssd_chunk_scan(**inp, chunk_size=8, dt_bias=dt_bias, dt_softplus=True, dt_limit=limit)
    y_ref, _ = naive_ssd_scan(**inp, dt_bias=dt_bias, dt_softplus=True, dt_limit=limit)
    y_unclamped, _ = naive_ssd_scan(**inp, dt_bias=dt_bias, dt_softplus=True)
    assert _rel_err(y, y_ref) < 1e-8
    assert _rel_err(y_unclamped, y_ref) > 1e-3  # the limit really changes the result


def test_returns_only_y_without_final_states_and_keeps_dtype() -> None:
    inp = {k: v.float() for k, v in _make_inputs(3, 2, 19).items()}
    y = ssd_chunk_scan(**inp, chunk_size=8)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    y_ref, _ = naive_ssd_scan(**inp)
    assert _rel_err(y, y_ref) < 1e-5  # float32 compute
    y_bf16 = ssd_chunk_scan(**{k: v.bfloat16() if k != "A" else v for k, v in inp.items()}, chunk_size=8)
    assert y_bf16.dtype == torch.bfloat16


def test_packed_row_equals_separate_sequences() -> None:
    lengths = [11, 16, 14]  # chunk 8: first boundary inside a chunk, second at position 27 (inside), end 41
    total = sum(lengths)
    batch, nheads, headdim, dstate = 2, 4, 3, 5
    inp = _make_inputs(11, batch, total, ngroups=2, softplus=True)
    g = torch.Generator().manual_seed(5)
    D = torch.randn(nheads, dtype=torch.float64, generator=g)
    z = torch.randn(batch, total, nheads, headdim, dtype=torch.float64, generator=g)
    dt_bias = torch.randn(nheads, dtype=torch.float64, generator=g)
    init = torch.randn(batch, nheads, headdim, dstate, dtype=torch.float64, generator=g)
    common = dict(chunk_size=8, D=D, dt_bias=dt_bias, dt_softplus=True, return_final_states=True)

    y_packed, final_packed = ssd_chunk_scan(
        **inp, z=z, seq_idx=_seq_idx(batch, lengths), initial_states=init, **common
    )
    start = 0
    for i, n in enumerate(lengths):
        sl = slice(start, start + n)
        part = {k: (v if k == "A" else v[:, sl]) for k, v in inp.items()}
        # The initial state belongs to the first sequence only; the others start from zero.
        y_sep, final_sep = ssd_chunk_scan(**part, z=z[:, sl], initial_states=init if i == 0 else None, **common)
        assert _rel_err(y_packed[:, sl], y_sep) < 1e-10, f"sequence {i}"
        start += n
    # The final state belongs to the last sequence alone.
    assert _rel_err(final_packed, final_sep) < 1e-10


@pytest.mark.parametrize("split", [13, 16, 24])
@pytest.mark.parametrize("packed", [False, True])
def test_two_halves_with_state_passing_equal_whole(split: int, packed: bool) -> None:
    seqlen, batch = 41, 2
    inp = _make_inputs(21, batch, seqlen, ngroups=2, softplus=True)
    g = torch.Generator().manual_seed(8)
    dt_bias = torch.randn(4, dtype=torch.float64, generator=g)
    D = torch.randn(4, 3, dtype=torch.float64, generator=g)
    init = torch.randn(batch, 4, 3, 5, dtype=torch.float64, generator=g)
    # Packed: sequences [0, 10), [10, 30), [30, 41); splits fall inside sequence 1 or at its start.
    seq_idx = _seq_idx(batch, [10, 20, 11]) if packed else None
    common = dict(chunk_size=8, D=D, dt_bias=dt_bias, dt_softplus=True, return_final_states=True)

    y_whole, final_whole = ssd_chunk_scan(**inp, seq_idx=seq_idx, initial_states=init, **common)

    first = {k: (v if k == "A" else v[:, :split]) for k, v in inp.items()}
    second = {k: (v if k == "A" else v[:, split:]) for k, v in inp.items()}
    y1, state = ssd_chunk_scan(
        **first, seq_idx=seq_idx[:, :split] if packed else None, initial_states=init, **common
    )
    if packed and int(seq_idx[0, split]) != int(seq_idx[0, split - 1]):
        # mamba_ssm semantics: a state carried into a new sequence must not leak into it. The caller resets
        # it exactly as the packed scan does.
        state = torch.zeros_like(state)
    y2, final_split = ssd_chunk_scan(
        **second, seq_idx=seq_idx[:, split:] if packed else None, initial_states=state, **common
    )
    assert _rel_err(torch.cat([y1, y2], dim=1), y_whole) < 1e-10
    assert _rel_err(final_split, final_whole) < 1e-10


def test_state_carries_information() -> None:
    """Guard against vacuous state tests: a different initial state must change the output."""
    inp = _make_inputs(4, 1, 20)
    y0 = ssd_chunk_scan(**inp, chunk_size=8)
    y1 = ssd_chunk_scan(**inp, chunk_size=8, initial_states=torch.ones(1, 4, 3, 5, dtype=torch.float64))
    assert _rel_err(y0, y1) > 1e-3


def test_rejects_bad_shapes() -> None:
    inp = _make_inputs(1, 1, 10)
    with pytest.raises(ValueError, match="dt must be"):
        ssd_chunk_scan(**{**inp, "dt": inp["dt"][:, :5]}, chunk_size=4)
    with pytest.raises(ValueError, match="multiple of ngroups"):
        ssd_chunk_scan(**_make_inputs(1, 1, 10, nheads=3, ngroups=2), chunk_size=4)


def test_gradients_match_finite_differences() -> None:
    """The backward (a hand-written one for the intra-chunk block) against torch.autograd.gradcheck's finite
    differences in float64: packed sequences, an initial state, D, a gate and several groups of chunks."""
    inp = _make_inputs(31, 1, 11, nheads=2, headdim=2, ngroups=1, dstate=3, softplus=True)
    g = torch.Generator().manual_seed(32)
    extra = {"D": torch.randn(2, generator=g, dtype=torch.float64), "z": torch.randn(1, 11, 2, 2, generator=g,
             dtype=torch.float64), "dt_bias": torch.randn(2, generator=g, dtype=torch.float64),
             "initial_states": torch.randn(1, 2, 2, 3, generator=g, dtype=torch.float64)}
    names = [*inp, *extra]
    tensors = [t.clone().requires_grad_(True) for t in (*inp.values(), *extra.values())]

    def scan(*args):
        kw = dict(zip(names, args))
        return ssd_chunk_scan(**kw, chunk_size=4, dt_softplus=True, seq_idx=_seq_idx(1, [6, 5]),
                              return_final_states=True, max_block_elements=2 * 16)  # 2 chunks per group

    assert torch.autograd.gradcheck(scan, tensors, eps=1e-6, atol=1e-7, fast_mode=True)
