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

Laid out for eager PyTorch, where each op is a kernel launch (~10 µs of host time on a GPU) that writes its
whole output: the sequence is split once into groups of whole chunks, as many as a per-device memory budget
allows (`block_elements`), and the outputs are concatenated once (a backward linear in length). A group costs a
fixed number of batched ops: the (b, c, h, l, s) block in three passes, the chunk-to-chunk state pass as one
matmul with the (c x c) decays between chunks. Contractions run in the input dtype with float32 accumulation,
as in mamba_ssm's kernels; cumulative decays and the carried state stay float32 (float64 for float64 inputs).
Decays must be <= 1 (dt * A <= 0, as in every Mamba-2 layer; mamba_ssm clamps them to 1).

Tensor dimension names used throughout: b batch, l / s token positions (target / source) within a chunk,
c chunk index, h heads, g groups of B/C (heads share B/C within a group), r heads per group (h = g * r,
heads of one group are contiguous as in mamba_ssm), p head dim, n state size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["block_elements", "scan_chunk", "ssd_chunk_scan"]

# Bound on the elements of the (b, c, h, l, s) block built per group of chunks (at least one chunk), per device:
# CPU 2**21 (8 MiB fp32: stays in cache, measured fastest); elsewhere (CUDA; meta stands for it in op counts) 2**28
# (~0.5 GB in bf16): 16k tokens of a 7B layer, 112 heads at chunk 128, are one group.
_BLOCK_ELEMENTS = {"cpu": 1 << 21}
_ACCELERATOR_BLOCK_ELEMENTS = 1 << 28


def scan_chunk(chunk_size: int) -> int:
    """The chunk the mixers scan with for a model configured with `chunk_size` (mamba_ssm's tile): at most 128.
    Chunks only tile the scan. A pass over the (b, c, h, l, s) block writes h * chunk elements per token, the chunk
    states h * p * n / chunk: the sum is least near 128 at p = 64, n = 128 (7B), and a CPU is faster there too."""
    return min(chunk_size, 128)


def block_elements(device: torch.device | str) -> int:
    """The default bound on the per-group intra-chunk block (elements) on `device`."""
    return _BLOCK_ELEMENTS.get(torch.device(device).type, _ACCELERATOR_BLOCK_ELEMENTS)


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
    max_block_elements: int | None = None,
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
        max_block_elements: bound on the per-group intra-chunk block (b * chunks * h * chunk^2 elements), default
            `block_elements(x.device)`; how many chunks are processed together (memory/speed trade-off only).

    Returns:
        y: (b, l, h, p) in x.dtype, and if ``return_final_states`` the final state (b, h, p, n) in float32 (float64
        for float64 inputs).
    """
    batch, seqlen, nheads, headdim = x.shape
    ngroups, dstate = B.shape[2], B.shape[3]
    _check_shapes(x, dt, A, B, C, D, z, seq_idx, initial_states, ngroups, dstate)
    cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32

    dt = _discretize_dt(dt, dt_bias, dt_softplus, dt_limit, cdtype)  # (b, l, h)
    A = A.to(cdtype)
    if initial_states is None:  # the state carried across groups
        state = x.new_zeros((batch, nheads, headdim, dstate), dtype=cdtype)
    else:
        # A private copy: callers (e.g. a streaming cache) may overwrite their tensor in place with the final
        # state, which would otherwise corrupt the tensor autograd saved for the backward pass.
        state = initial_states.to(cdtype, copy=True)
    if seqlen == 0:
        y = x.new_empty(x.shape)
        return (y, state) if return_final_states else y
    # Sequence id of the token just before the next group: by definition the first token's for the first group.
    prev_seq = seq_idx[:, 0] if seq_idx is not None else None

    bound = block_elements(x.device) if max_block_elements is None else max_block_elements
    group_len = max(1, bound // (batch * nheads * chunk_size * chunk_size)) * chunk_size
    # Split once: one backward node concatenates the groups' gradients (slicing per group would make autograd
    # build a full-length gradient for every group, a backward quadratic in the length).
    ys, parts = [], [t.split(group_len, dim=1) for t in (x, dt, B, C)]
    for i, seq in enumerate(seq_idx.split(group_len, dim=1) if seq_idx is not None else [None] * len(parts[0])):
        y, state, prev_seq = _scan_group(*(t[i] for t in parts), A, chunk_size, state, seq, prev_seq)
        ys.append(y)
    y = _skip_and_gate(ys[0] if len(ys) == 1 else torch.cat(ys, dim=1), x, D, z)
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


def _discretize_dt(dt: torch.Tensor, dt_bias: torch.Tensor | None, dt_softplus: bool, dt_limit: tuple[float, float],
                   cdtype: torch.dtype) -> torch.Tensor:
    """(b, l, h) raw dt -> (b, l, h) effective step in the compute dtype (bias, softplus, clamp)."""
    dt = dt.to(cdtype)
    if dt_bias is not None:
        dt = dt + dt_bias.to(cdtype)
    if dt_softplus:
        dt = F.softplus(dt)
    if tuple(dt_limit) != (0.0, float("inf")):
        dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])
    return dt


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd will record an op on these tensors (if not, temporaries may be updated in place)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _scan_group(x: torch.Tensor, dt: torch.Tensor, B: torch.Tensor, C: torch.Tensor, A: torch.Tensor, chunk: int,
                state: torch.Tensor, seq: torch.Tensor | None, prev_seq: torch.Tensor | None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Scan one group of consecutive chunks, starting from ``state``, with a fixed number of batched ops.

    Args:
        x: (b, t, h, p); dt: (b, t, h) discretised; B, C: (b, t, g, n); A: (h,).
        state: (b, h, p, n) state before the group's first token (float32 / float64).
        seq: (b, t) or None; prev_seq: (b,) sequence id that ``state`` belongs to, or None.

    Returns:
        y: (b, t, h, p) in x.dtype, without the D skip and gate; the state after the group's last token; and
        the sequence id of that last token.
    """
    length = x.shape[1]
    pad = (-length) % chunk
    if pad:  # only the last group: padding tokens get dt = 0, so they neither decay the state nor add to it
        x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
        seq = None if seq is None else torch.cat([seq, seq[:, -1:].expand(-1, pad)], dim=1)
    x, dt, B, C = (t.unflatten(1, (-1, chunk)) for t in (x, dt, B, C))  # (b, c, l, ...)
    seq = None if seq is None else seq.unflatten(1, (-1, chunk))  # (b, c, l)
    # Cumulative log-decay inside each chunk: a[..., l, h] = sum_{k <= l} dt_k * A_h  (<= 0, decreasing).
    a = torch.cumsum(dt * A, dim=2)  # (b, c, l, h)

    y_diag = _intra_chunk_output(x, dt, a, B, C, seq)  # (b, c, g, r, l, p)
    start, state, prev_seq, carry = _pass_states(_chunk_end_states(x, dt, a, B, seq, state), a, state, seq, prev_seq)
    y = _state_output(C, start, a, carry, y_diag)  # (b, c, l, h, p)
    return y.flatten(1, 2)[:, :length], state, prev_seq


def _intra_chunk_output(
    x: torch.Tensor, dt: torch.Tensor, a: torch.Tensor, B: torch.Tensor, C: torch.Tensor, seq: torch.Tensor | None
) -> torch.Tensor:
    """Output from tokens of the same chunk (the "diagonal blocks" of the SSD matrix).

    y[l] = sum_{s <= l, same sequence} (C_l . B_s) * exp(a[l] - a[s]) * dt_s x_s

    Args: x: (b, c, l, h, p); dt, a: (b, c, l, h); B, C: (b, c, l, g, n); seq: (b, c, l) or None.
    Returns: (b, c, g, r, l, p) in x.dtype.
    """
    chunk, ngroups = a.shape[2], B.shape[3]
    scores = torch.einsum("bclgn,bcsgn->bcgls", C.to(a.dtype), B.to(a.dtype))  # (b, c, g, l, s), small
    allowed = torch.ones(chunk, chunk, dtype=torch.bool, device=a.device).tril()  # s <= l
    if seq is not None:
        allowed = allowed & (seq[..., :, None] == seq[..., None, :])[:, :, None]
    scores = scores.masked_fill(~allowed, 0.0)[:, :, :, None]  # (b, c, g, 1, l, s)
    # dt_s x_s head-major (b, c, g, r, s, p), written once in that layout (the output follows the first operand).
    dt_hm = dt.transpose(2, 3).to(x.dtype, memory_format=torch.contiguous_format).unflatten(2, (ngroups, -1))
    x_dt = dt_hm[..., None] * x.transpose(2, 3).unflatten(2, (ngroups, -1))
    return _DiagonalBlocks.apply(a.transpose(2, 3).unflatten(2, (ngroups, -1)), scores, x_dt)


class _DiagonalBlocks(torch.autograd.Function):
    """y = (exp(a[l] - a[s]) * scores[l, s]) @ x_dt per chunk and head; a: (b, c, g, r, l) float32 / float64, scores:
    (b, c, g, 1, l, s) zero where s may not reach l, x_dt: (b, c, g, r, s, p). The (..., l, s) block, the scan's
    largest tensor, is written in x_dt's dtype three times each way (autograd's own backward: ~8 float32 copies)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, scores: torch.Tensor, x_dt: torch.Tensor) -> torch.Tensor:
        decay = torch.empty((*a.shape, a.shape[-1]), dtype=x_dt.dtype, device=a.device)
        causal = torch.ones(a.shape[-1], a.shape[-1], dtype=a.dtype, device=a.device).tril()
        # log decay from s to l: a[l] - a[s] where s <= l, else a[l] (<= 0: finite, and zeroed by the scores);
        # computed in a's precision, written in x_dt's (bf16: within its own rounding of the weights).
        torch.addcmul(a[..., :, None], a[..., None, :], causal, value=-1, out=decay).exp_()
        if not any(ctx.needs_input_grad):
            return decay.mul_(scores) @ x_dt
        weights = decay * scores.to(decay.dtype)
        ctx.save_for_backward(scores, x_dt, decay, weights)
        return weights @ x_dt

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        scores, x_dt, decay, weights = ctx.saved_tensors
        dx_dt = weights.transpose(-1, -2) @ dy if ctx.needs_input_grad[2] else None
        d_decay = (dy @ x_dt.transpose(-1, -2)).mul_(decay)  # d(weights) * decay, (b, c, g, r, l, s)
        d_scores = d_decay.sum(3, keepdim=True, dtype=scores.dtype)
        d_log = d_decay.mul_(scores)  # d(weights) * weights: the gradient of the log decay a[l] - a[s]
        d_a = d_log.sum(-1, dtype=scores.dtype) - d_log.sum(-2, dtype=scores.dtype)
        return d_a, d_scores, dx_dt


def _chunk_end_states(
    x: torch.Tensor, dt: torch.Tensor, a: torch.Tensor, B: torch.Tensor, seq: torch.Tensor | None, state: torch.Tensor
) -> torch.Tensor:
    """The sources of the state pass: ``state`` (the state entering the group), then the state at each chunk's
    end produced by that chunk's own tokens (as if the chunk started from zero).

    state_c = sum_s exp(a[last] - a[s]) * dt_s x_s B_s^T, over tokens s of the chunk's last sequence
    (tokens of earlier sequences in the chunk must not leak into the state that is carried on).

    Args: x: (b, c, l, h, p); dt, a: (b, c, l, h); B: (b, c, l, g, n); seq: (b, c, l) or None; state: (b, h, p, n).
    Returns: (b, c + 1, h, p, n) in x.dtype.
    """
    b, c, _, h, p = x.shape
    ngroups, n = B.shape[3:]
    weight = torch.exp(a[:, :, -1:] - a) * dt  # (b, c, l, h), <= dt
    if seq is not None:
        weight = weight * (seq == seq[:, :, -1:])[..., None]
    x_w = (x * weight[..., None].to(x.dtype)).unflatten(3, (ngroups, -1))  # (b, c, l, g, r, p), x's layout
    # (b, c, g, r*p, l) @ (b, c, g, l, n): the heads of a group share B, so they are rows of one matmul.
    lhs, rhs = x_w.permute(0, 1, 3, 4, 5, 2).flatten(3, 4), B.transpose(2, 3).to(x.dtype)
    if _needs_grad(lhs, rhs, state) or b > 1:
        return torch.cat([state.to(x.dtype)[:, None], torch.matmul(lhs, rhs).view(b, c, h, p, n)], dim=1)
    sources = torch.empty(b, c + 1, h, p, n, dtype=x.dtype, device=x.device)
    sources[:, 0] = state
    torch.matmul(lhs, rhs, out=sources[:, 1:].view(b, c, ngroups, -1, n))  # straight into place, no copy
    return sources


def _pass_states(sources: torch.Tensor, a: torch.Tensor, state: torch.Tensor, seq: torch.Tensor | None,
                 prev_seq: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """The state entering every chunk of the group, and after it, in one matmul over chunks.

    start_i = sum_{j < i} exp(cum[i-1] - cum[j]) * chunk_states_j + exp(cum[i-1]) * state, where cum[k] is the
    log-decay of chunks 0..k; a term is dropped when a sequence starts inside a chunk between source and target
    (that chunk's last token's id differs from the id of the token before it). i = c is the state after the group.

    Args:
        sources: (b, c + 1, h, p, n), `state` then the chunk states (`_chunk_end_states`); a: (b, c, l, h); state:
        (b, h, p, n) entering the first chunk (float32 / float64); seq: (b, c, l) or None; prev_seq: (b,) id of the
        token before the first chunk, or None.

    Returns:
        start_states (b, c, h, p, n) in sources' dtype; state after the last chunk (b, h, p, n) in state's
        dtype; id of the last token (b,) or None; and carry_mask (b, c, l) telling which tokens belong to the
        sequence of their chunk's start state (None without seq_idx, meaning all do).
    """
    b, c, h, p, n = sources.shape[0], sources.shape[1] - 1, *sources.shape[2:]
    # before[i]: log-decay of chunks 0..i-1 (0 for i = 0); a source j (0: `state`, j > 0: chunk j - 1) reaches the
    # start of chunk i (i = c: the end of the group) decayed by exp(before[i] - before[j]), for j <= i.
    before = F.pad(torch.cumsum(a[:, :, -1], dim=1), (0, 0, 1, 0))  # (b, c + 1, h)
    valid = torch.ones(c + 1, c + 1, dtype=torch.bool, device=a.device).tril()  # (i, j): j <= i
    carry_mask = None
    if seq is not None:
        # Id of the token just before each chunk: prev_seq for the first, the previous chunk's last otherwise.
        before_id = torch.cat([prev_seq[:, None], seq[:, :-1, -1]], dim=1)  # (b, c)
        carry_mask = seq == before_id[:, :, None]  # (b, c, l)
        resets = F.pad(torch.cumsum(~carry_mask[:, :, -1], dim=1), (1, 0))  # (b, c + 1): chunks < i ending anew
        valid = valid & (resets[:, :, None] == resets[:, None, :])  # (b, c + 1, c + 1)
        prev_seq = seq[:, -1, -1]
    log_w = torch.where(valid[..., None], before[:, :, None] - before[:, None], -torch.inf)  # (b, c+1, c+1, h)
    weights = log_w.exp().permute(0, 3, 1, 2).to(sources.dtype)  # (b, h, c + 1, c + 1)
    sources = sources.flatten(3).transpose(1, 2)  # (b, h, c + 1, p * n)
    if _needs_grad(weights, sources) or b > 1:
        start = torch.matmul(weights, sources).transpose(1, 2)  # (b, c + 1, h, p * n)
    else:  # written straight in the (b, c + 1, h, p * n) layout that the output step reads
        start = torch.empty(b, c + 1, h, p * n, dtype=sources.dtype, device=sources.device)
        torch.matmul(weights, sources, out=start.transpose(1, 2))
    final = start[:, -1].reshape(b, h, p, n).to(state.dtype)
    return start[:, :-1].reshape(b, c, h, p, n), final, prev_seq, carry_mask


def _state_output(C: torch.Tensor, start_states: torch.Tensor, a: torch.Tensor, carry_mask: torch.Tensor | None,
                  y_diag: torch.Tensor) -> torch.Tensor:
    """y_diag plus the output from the state entering each chunk (the "off-diagonal blocks" of the SSD matrix).

    y[l] = exp(a[l]) * start_state C_l, only for tokens of the start state's sequence.

    Args: C: (b, c, l, g, n); start_states: (b, c, h, p, n); a: (b, c, l, h); carry_mask: (b, c, l) or None;
    y_diag: (b, c, g, r, l, p).
    Returns: (b, c, l, h, p) in y_diag's dtype.
    """
    b, c, chunk, ngroups, _ = C.shape
    h, p = start_states.shape[2:4]
    # (b, c, g, l, n) @ (b, c, g, n, r * p): the heads of a group share C.
    starts = start_states.reshape(b, c, ngroups, -1, start_states.shape[-1]).transpose(-1, -2)
    y = torch.matmul(C.transpose(2, 3).to(y_diag.dtype), starts)  # (b, c, g, l, r * p)
    scale = torch.exp(a) if carry_mask is None else torch.exp(a) * carry_mask[..., None]  # (b, c, l, h)
    scale = scale.unflatten(3, (ngroups, -1)).transpose(2, 3)[..., None].to(y.dtype)  # (b, c, g, l, r, 1)
    y = y.unflatten(4, (-1, p))  # (b, c, g, l, r, p)
    y_diag = y_diag.transpose(3, 4)  # (b, c, g, l, r, p)
    if _needs_grad(y, scale, y_diag):
        y = y * scale + y_diag
    else:
        y = torch.addcmul(y_diag, y, scale, out=y)
    return y.transpose(2, 3).reshape(b, c, chunk, h, p)


def _skip_and_gate(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None) -> torch.Tensor:
    """y + D * x, then * silu(z). y, x, z: (b, t, h, p) in x.dtype; D: (h,) or (h, p)."""
    if D is not None:
        D = D[:, None] if D.dim() == 1 else D
        if _needs_grad(y, x, D):
            y = torch.addcmul(y, x, D.to(y.dtype))
        else:
            y = y.addcmul_(x, D)  # computed in D's precision, written in y's dtype
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y
