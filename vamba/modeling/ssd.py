"""Pure-PyTorch chunked SSD scan (Mamba-2 "state space duality"), linear in sequence length.

This is the device-independent reference for the Mamba-2 selective scan. It computes, for every head,

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T        (state h_t: headdim x d_state)
    y_t = h_t C_t + D * x_t                                   (optionally gated: y_t * silu(z_t))

with the same signature and semantics as ``mamba_ssm``'s ``mamba_chunk_scan_combined``, including packed
sequences (``seq_idx``) and initial/final states, so the model can use either interchangeably.

Why chunked: a step-by-step recurrence is sequential over tokens and therefore slow in PyTorch, while the
fully "dual" (attention-like) form is quadratic. The SSD algorithm splits the sequence into chunks of
``chunk_size`` tokens: inside a chunk the output is a small masked matrix product (parallel, quadratic only
in the chunk size), and between chunks only a (headdim x d_state) state per head is carried.

Why this implementation and not transformers' torch path: that path materialises the L x L block of every
chunk at once and mixes chunk states with a step that is quadratic in the number of chunks, so its memory
grows quickly with length (gigabytes at 64k tokens). Here the intra-chunk blocks are computed for a bounded
group of chunks at a time and states pass between chunks through a sequential recurrence over chunks, so both
time and memory are linear in sequence length; extra memory is bounded by the group size.

Tensor dimension names used throughout: b batch, l / s token positions (target / source) within a chunk,
c chunk index, h heads, g groups of B/C (heads share B/C within a group), r heads per group (h = g * r,
heads of one group are contiguous as in mamba_ssm), p head dim, n state size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["ssd_chunk_scan"]

# Upper bound on the number of elements of the (b, c, h, l, s) intra-chunk decay/score tensor built per group
# of chunks: 2**21 fp32 elements = 8 MiB. Small enough to stay in the CPU's last-level cache (measured faster
# than larger groups) and to keep the scan's extra memory at tens of MiB whatever the sequence length; large
# enough that per-group Python overhead is negligible. At least one chunk is always processed.
_DEFAULT_MAX_BLOCK_ELEMENTS = 1 << 21


def ssd_chunk_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
    seq_idx: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    return_final_states: bool = False,
    *,
    max_block_elements: int = _DEFAULT_MAX_BLOCK_ELEMENTS,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD scan; drop-in for ``mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined``.

    Args:
        x: (b, l, h, p) inputs.
        dt: (b, l, h) raw time steps; ``dt_bias`` is added, then softplus if ``dt_softplus``, then clamped to
            ``dt_limit`` (the clamp is skipped for the default (0, inf), as in mamba_ssm).
        A: (h,) per-head decay rate, negative.
        B, C: (b, l, g, n) input / output projections of the state; h % g == 0.
        chunk_size: tokens per chunk; l need not be a multiple of it.
        D: (h,) or (h, p) skip connection, y += D * x.
        z: (b, l, h, p) gate, y *= silu(z).
        dt_bias: (h,) added to dt before softplus.
        seq_idx: (b, l) integer sequence id per token, nondecreasing along l (packed sequences). No information
            flows between tokens of different ids. ``initial_states`` only reach tokens that belong to the
            sequence of the row's first token (mamba_ssm applies them to id 0, which is the same thing for the
            usual ids starting at 0).
        initial_states: (b, h, p, n) state before the first token.
        return_final_states: also return the state after the last token (only the last token's sequence).
        max_block_elements: bound on the per-group intra-chunk score tensor (b * chunks * h * chunk^2
            elements); controls how many chunks are processed together (memory/speed trade-off only).

    Returns:
        y: (b, l, h, p) in x.dtype, and if ``return_final_states`` the final state (b, h, p, n) in the compute
        dtype (float32, or float64 for float64 inputs).
    """
    batch, seqlen, nheads, headdim = x.shape
    ngroups, dstate = B.shape[2], B.shape[3]
    _check_shapes(x, dt, A, B, C, D, z, seq_idx, initial_states, ngroups, dstate)
    cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32

    dt = _discretize_dt(dt, dt_bias, dt_softplus, dt_limit, cdtype)  # (b, l, h)
    A = A.to(cdtype)

    # The state carried across chunks (and groups). Zeros when no initial state was given.
    if initial_states is None:
        state = x.new_zeros((batch, nheads, headdim, dstate), dtype=cdtype)
    else:
        # A private copy: callers (e.g. a streaming cache) may overwrite their tensor in place with the final
        # state, which would otherwise corrupt the tensor autograd saved for the backward pass.
        state = initial_states.to(cdtype, copy=True)
    # Sequence id of the token just before the next chunk, i.e. the sequence the carried state belongs to.
    # Before the first chunk that is, by definition, the first token's sequence.
    prev_seq = seq_idx[:, 0] if seq_idx is not None and seqlen > 0 else None

    chunks_per_group = max(1, max_block_elements // (batch * nheads * chunk_size * chunk_size))
    group_len = chunks_per_group * chunk_size
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # contiguous even when x is a strided view
    for start in range(0, seqlen, group_len):
        end = min(start + group_len, seqlen)
        sl = slice(start, end)
        y_group, state, prev_seq = _scan_group(
            x[:, sl], dt[:, sl], A, B[:, sl], C[:, sl], chunk_size, state,
            seq_idx[:, sl] if seq_idx is not None else None, prev_seq,
        )
        y_group = _skip_and_gate(y_group, x[:, sl], D, z[:, sl] if z is not None else None)
        y[:, sl] = y_group.to(x.dtype)

    if return_final_states:
        return y, state
    return y


def _check_shapes(x, dt, A, B, C, D, z, seq_idx, initial_states, ngroups, dstate) -> None:
    """Fail early with a readable message instead of an obscure einsum error."""
    b, l, h, p = x.shape
    if dt.shape != (b, l, h):
        raise ValueError(f"dt must be {(b, l, h)}, got {tuple(dt.shape)}")
    if A.shape != (h,):
        raise ValueError(f"A must be {(h,)}, got {tuple(A.shape)}")
    for name, t in (("B", B), ("C", C)):
        if t.shape != (b, l, ngroups, dstate):
            raise ValueError(f"{name} must be {(b, l, ngroups, dstate)}, got {tuple(t.shape)}")
    if h % ngroups != 0:
        raise ValueError(f"number of heads {h} must be a multiple of ngroups {ngroups}")
    if D is not None and D.shape not in ((h,), (h, p)):
        raise ValueError(f"D must be {(h,)} or {(h, p)}, got {tuple(D.shape)}")
    if z is not None and z.shape != x.shape:
        raise ValueError(f"z must be {tuple(x.shape)}, got {tuple(z.shape)}")
    if seq_idx is not None and seq_idx.shape != (b, l):
        raise ValueError(f"seq_idx must be {(b, l)}, got {tuple(seq_idx.shape)}")
    if initial_states is not None and initial_states.shape != (b, h, p, dstate):
        raise ValueError(f"initial_states must be {(b, h, p, dstate)}, got {tuple(initial_states.shape)}")


def _discretize_dt(
    dt: torch.Tensor,
    dt_bias: torch.Tensor | None,
    dt_softplus: bool,
    dt_limit: tuple[float, float],
    cdtype: torch.dtype,
) -> torch.Tensor:
    """(b, l, h) raw dt -> (b, l, h) effective step in the compute dtype (bias, softplus, clamp)."""
    dt = dt.to(cdtype)
    if dt_bias is not None:
        dt = dt + dt_bias.to(cdtype)
    if dt_softplus:
        dt = F.softplus(dt)
    if tuple(dt_limit) != (0.0, float("inf")):
        dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])
    return dt


def _to_chunks(t: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """(b, l, ...) -> (b, c, chunk_size, ...), zero-padding the end of the sequence."""
    pad = (-t.shape[1]) % chunk_size
    if pad:
        # F.pad pads trailing dims first: zero pairs for every dim after the sequence dim, then (0, pad).
        t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
    return t.reshape(t.shape[0], -1, chunk_size, *t.shape[2:])


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _scan_group(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    state: torch.Tensor,
    seq_idx: torch.Tensor | None,
    prev_seq: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Scan one group of consecutive chunks, starting from ``state``.

    Args:
        x: (b, t, h, p); dt: (b, t, h) discretised; A: (h,); B, C: (b, t, g, n); t <= chunks_per_group * chunk.
        state: (b, h, p, n) state before the group's first token (compute dtype).
        seq_idx: (b, t) or None; prev_seq: (b,) sequence id that ``state`` belongs to, or None.

    Returns:
        y: (b, t, h, p) scan output without the D skip and gate (compute dtype); the state after the group's
        last token; and the sequence id of that last token.
    """
    seqlen = x.shape[1]
    cdtype = state.dtype
    ngroups = B.shape[2]
    heads_per_group = x.shape[2] // ngroups

    # Work in a head-major layout, (b, c, g, r, l, p) and (b, c, g, l, n), so that every contraction below is
    # a plain batched matmul without hidden copies. Padding tokens get dt = 0: they neither decay the state
    # (exp(0) = 1) nor add to it, so the state after the padded chunk equals the state after the last real token.
    x_dt = _to_chunks(x.to(cdtype) * dt[..., None], chunk_size)  # (b, c, l, h, p)
    x_dt = x_dt.transpose(2, 3).unflatten(2, (ngroups, heads_per_group)).contiguous()  # (b, c, g, r, l, p)
    B_c = _to_chunks(B.to(cdtype), chunk_size).transpose(2, 3).contiguous()  # (b, c, g, l, n)
    C_c = _to_chunks(C.to(cdtype), chunk_size).transpose(2, 3).contiguous()  # (b, c, g, l, n)
    # Cumulative log-decay inside each chunk: a_cum[..., h, l] = sum_{k <= l} dt_k * A_h  (<= 0, decreasing).
    a_cum = torch.cumsum(_to_chunks(dt, chunk_size) * A, dim=2).transpose(2, 3).contiguous()  # (b, c, h, l)
    a_cum = a_cum.unflatten(2, (ngroups, heads_per_group))  # (b, c, g, r, l)
    seq_c = None
    if seq_idx is not None:
        pad = (-seqlen) % chunk_size  # padding tokens continue the last sequence
        seq_c = _to_chunks(torch.cat([seq_idx, seq_idx[:, -1:].expand(-1, pad)], dim=1), chunk_size)  # (b, c, l)

    y_diag = _intra_chunk_output(C_c, B_c, x_dt, a_cum, seq_c)
    chunk_states = _chunk_end_states(B_c, x_dt, a_cum, seq_c)
    start_states, state, prev_seq, carry_mask = _pass_states(chunk_states, a_cum, state, seq_c, prev_seq)
    y = y_diag + _state_output(C_c, start_states, a_cum, carry_mask)  # (b, c, g, r, l, p)

    y = y.flatten(2, 3).permute(0, 1, 3, 2, 4).flatten(1, 2)  # (b, c * l, h, p)
    return y[:, :seqlen], state, prev_seq


def _intra_chunk_output(
    C: torch.Tensor, B: torch.Tensor, x_dt: torch.Tensor, a_cum: torch.Tensor, seq: torch.Tensor | None
) -> torch.Tensor:
    """Output from tokens of the same chunk (the "diagonal blocks" of the SSD matrix).

    y[l] = sum_{s <= l, same sequence} (C_l . B_s) * exp(a_cum[l] - a_cum[s]) * dt_s x_s

    Args: C, B: (b, c, g, l, n); x_dt: (b, c, g, r, l, p); a_cum: (b, c, g, r, l); seq: (b, c, l) or None.
    Returns: (b, c, g, r, l, p).
    """
    chunk = a_cum.shape[-1]
    scores = torch.einsum("bcgln,bcgsn->bcgls", C, B)[:, :, :, None]  # (b, c, g, 1, l, s)

    allowed = torch.ones(chunk, chunk, dtype=torch.bool, device=a_cum.device).tril()  # causal: s <= l
    if seq is not None:
        allowed = allowed & (seq[:, :, :, None] == seq[:, :, None, :])[:, :, None, None]  # (b, c, 1, 1, l, s)
    decay = a_cum[..., :, None] - a_cum[..., None, :]  # (b, c, g, r, l, s), log of the decay from s to l
    # Mask before exp: above the diagonal a[l] - a[s] > 0 could overflow to inf, and inf * 0 would be nan.
    # In place on the fresh tensor: these (b, c, h, l, s) tensors dominate the scan's memory traffic.
    decay.masked_fill_(~allowed, -math.inf).exp_()
    weights = decay * scores if _needs_grad(decay, scores) else decay.mul_(scores)
    return torch.einsum("bcgrls,bcgrsp->bcgrlp", weights, x_dt)


def _chunk_end_states(
    B: torch.Tensor, x_dt: torch.Tensor, a_cum: torch.Tensor, seq: torch.Tensor | None
) -> torch.Tensor:
    """State at each chunk's end produced by that chunk's own tokens (as if the chunk started from zero).

    state_c = sum_s exp(a_cum[last] - a_cum[s]) * dt_s x_s B_s^T, over tokens s of the chunk's last sequence
    (tokens of earlier sequences in the chunk must not leak into the state that is carried on).

    Args: B: (b, c, g, l, n); x_dt: (b, c, g, r, l, p); a_cum: (b, c, g, r, l); seq: (b, c, l) or None.
    Returns: (b, c, g, r, p, n).
    """
    decay = torch.exp(a_cum[..., -1:] - a_cum)  # (b, c, g, r, l), <= 1
    if seq is not None:
        decay = decay * (seq == seq[:, :, -1:])[:, :, None, None]
    return torch.einsum("bcgsn,bcgrsp->bcgrpn", B, x_dt * decay[..., None])


def _pass_states(
    chunk_states: torch.Tensor,
    a_cum: torch.Tensor,
    state: torch.Tensor,
    seq: torch.Tensor | None,
    prev_seq: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Sequential recurrence over chunks: the state entering each chunk (linear in the number of chunks).

    start_{c+1} = keep_c * exp(a_cum[c, last]) * start_c + chunk_states_c, where keep_c is 0 when a new
    sequence starts inside chunk c (its last token's id differs from the id of the token before the chunk).

    Args:
        chunk_states: (b, c, g, r, p, n); a_cum: (b, c, g, r, l); state: (b, h, p, n) state entering the first
        chunk; seq: (b, c, l) or None; prev_seq: (b,) id of the token before the first chunk, or None.

    Returns:
        start_states (b, c, g, r, p, n); state after the last chunk (b, h, p, n); id of the last token (b,) or
        None; and carry_mask (b, c, l) telling which tokens belong to the sequence of their chunk's start
        state (None without seq_idx, meaning all do).
    """
    batch, nchunks, ngroups, heads_per_group, headdim, dstate = chunk_states.shape
    chunk_decay = torch.exp(a_cum[..., -1])  # (b, c, g, r)
    carry_mask = None
    if seq is not None:
        # Id of the token just before each chunk: prev_seq for the first, the previous chunk's last otherwise.
        before = torch.cat([prev_seq[:, None], seq[:, :-1, -1]], dim=1)  # (b, c)
        carry_mask = seq == before[:, :, None]  # (b, c, l)
        chunk_decay = chunk_decay * carry_mask[:, :, -1:, None]  # zero when the chunk ends in a new sequence
        prev_seq = seq[:, -1, -1]

    state = state.view(batch, ngroups, heads_per_group, headdim, dstate)
    start_states = []
    for c in range(nchunks):
        start_states.append(state)
        state = state * chunk_decay[:, c, :, :, None, None] + chunk_states[:, c]
    return torch.stack(start_states, dim=1), state.flatten(1, 2), prev_seq, carry_mask


def _state_output(
    C: torch.Tensor, start_states: torch.Tensor, a_cum: torch.Tensor, carry_mask: torch.Tensor | None
) -> torch.Tensor:
    """Output from the state entering each chunk (the "off-diagonal blocks" of the SSD matrix).

    y[l] = exp(a_cum[l]) * start_state C_l, only for tokens of the start state's sequence.

    Args: C: (b, c, g, l, n); start_states: (b, c, g, r, p, n); a_cum: (b, c, g, r, l); carry_mask: (b, c, l)
    or None.
    Returns: (b, c, g, r, l, p).
    """
    y = torch.einsum("bcgln,bcgrpn->bcgrlp", C, start_states)
    decay = torch.exp(a_cum)  # (b, c, g, r, l)
    if carry_mask is not None:
        decay = decay * carry_mask[:, :, None, None]
    return y * decay[..., None]


def _skip_and_gate(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None) -> torch.Tensor:
    """y + D * x, then * silu(z). y: (b, t, h, p) compute dtype; x, z: (b, t, h, p); D: (h,) or (h, p)."""
    if D is not None:
        D = D.to(y.dtype)
        y = y + x.to(y.dtype) * (D[:, None] if D.dim() == 1 else D)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y
