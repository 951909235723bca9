"""The video stream split along time: what one slice computes, and the hooks that join the slices exactly.

Vamba's video tokens meet only three things (DESIGN.md section 2): the vision tower (within each temporal patch),
each layer's Mamba-2 mixer (a recurrence) and the cross-attention keys/values (per token). So the stream of one
sample can be cut into contiguous slices, at temporal-patch boundaries, and each slice computed on its own, given:

- the mixer's conv halo: the last `d_conv - 1` pre-convolution inputs before the slice;
- the SSM state entering the slice. Each slice scans from a zero state; the state entering slice r is the
  exclusive prefix F_r = sum_{j<r} (prod_{j<i<r} c_i) f_j of the slices' final states f_j and decays c_i (exact by
  linearity of the recurrence: the entering state h adds exp(cumsum(dt A))_t * (C_t . h) to every output of the
  slice's first sequence, which is what `slice_mixer_forward` adds). This costs one exchange of small tensors
  (heads x headdim x d_state) and one contraction per slice, instead of a second scan or a serial hand-off.
- cross-attention over all slices: each slice attends to its own keys/values and returns (output, log-sum-exp);
  the partials merge exactly (`merge_partials`), as flash-attention merges its blocks.

This module is single-device: the exchanges are the `SliceHooks` methods, which `vamba.parallel` implements with
torch.distributed collectives over a process group (and which a test can implement in one process). Packed
sequences stay right across slice boundaries: a slice's halo and entering state only reach tokens of the sequence
that continues from the slice before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F

from .mamba2 import Mamba2Mixer, causal_depthwise_conv
from .mamba_fused import fused_kernels
from .ssd import _discretize_dt, scan_chunk, ssd_chunk_scan
from .video_stream import VideoStream, grid_positions


@dataclass
class SlicePiece:
    """Temporal patches [t0, t1) of stream item `item` (an index into `SlicePlan.items`)."""

    item: int
    t0: int
    t1: int


@dataclass
class SlicePlan:
    """How one sample's visual stream is cut into `world` contiguous slices (identical on every rank).

    items: (kind, index within its kind, (t, h, w) patch grid, packed sample) in stream order (`stream_items`);
    pieces[r]: what slice r holds; ranges[r]: its [start, end) in stream tokens; merge: the spatial merge size.
    """

    items: list[tuple[str, int, tuple[int, int, int], int]]
    pieces: list[list[SlicePiece]]
    ranges: list[tuple[int, int]]
    merge: int

    @property
    def world(self) -> int:
        return len(self.pieces)

    def pixel_rows(self, rank: int) -> list[tuple[str, int, int]]:
        """(kind, first row, end row) of each piece of slice `rank` in its kind's pixel tensor (Qwen2-VL layout: each
        item's rows are t * h * w patches, items of a kind concatenated in order)."""
        offsets, acc = {}, {"image": 0, "video": 0}
        for k, (kind, _, (t, h, w), _) in enumerate(self.items):
            offsets[k] = acc[kind]
            acc[kind] += t * h * w
        rows = []
        for piece in self.pieces[rank]:
            kind, _, (_, h, w), _ = self.items[piece.item]
            rows.append((kind, offsets[piece.item] + piece.t0 * h * w, offsets[piece.item] + piece.t1 * h * w))
        return rows

    def sample_idx(self) -> torch.Tensor:
        """(1, M) packed sample of every stream token (= the mixer's sequence id: one row, no padding)."""
        return torch.cat([torch.full((t * h * w // self.merge**2,), s, dtype=torch.long)
                          for _, _, (t, h, w), s in self.items])[None]

    def grid_positions(self, rank: int) -> torch.Tensor:
        """(3, m) (t, h, w) position of each token of slice `rank` in its item's merged grid."""
        parts = []
        for piece in self.pieces[rank]:
            _, _, (_, h, w), _ = self.items[piece.item]
            pos = grid_positions((piece.t1 - piece.t0, h // self.merge, w // self.merge), "cpu")
            pos[0] += piece.t0
            parts.append(pos)
        return torch.cat(parts, dim=1)


def plan_slices(items: list[tuple[str, int, tuple[int, int, int], int]], merge: int, world: int) -> SlicePlan:
    """Cut the stream into `world` contiguous slices of about equal token counts, at temporal-patch boundaries.

    Raises:
        ValueError: if the stream has fewer than `world` temporal patches (a slice would be empty).
    """
    units = [(k, t) for k, (_, _, (tt, _, _), _) in enumerate(items) for t in range(tt)]
    if len(units) < world:
        raise ValueError(f"context parallel over {world} ranks needs at least {world} temporal patches of video; "
                         f"this sample has {len(units)}")
    sizes = [items[k][2][1] * items[k][2][2] // merge**2 for k, _ in units]
    cum = [0]
    for size in sizes:
        cum.append(cum[-1] + size)
    # cut r at the unit boundary closest to r/W of the tokens, leaving at least one unit to every slice
    bounds = [0]
    for r in range(1, world):
        lo, hi = bounds[-1] + 1, len(units) - (world - r)
        bounds.append(min(range(lo, hi + 1), key=lambda b: abs(cum[b] - cum[-1] * r / world)))
    bounds.append(len(units))
    pieces, ranges, start = [], [], 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        rank_pieces: list[SlicePiece] = []
        for k, t in units[a:b]:
            if rank_pieces and rank_pieces[-1].item == k and rank_pieces[-1].t1 == t:
                rank_pieces[-1].t1 = t + 1
            else:
                rank_pieces.append(SlicePiece(k, t, t + 1))
        n = sum(sizes[a:b])
        pieces.append(rank_pieces)
        ranges.append((start, start + n))
        start += n
    return SlicePlan(items=items, pieces=pieces, ranges=ranges, merge=merge)


class SliceHooks(Protocol):
    """The exchanges between slices (implemented by `vamba.parallel.ContextParallel`). Every call is made by every
    slice in the same order; results must be differentiable with respect to the inputs of every slice."""

    rank: int

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """The same-shaped `tensor` of every slice, in slice order."""
        ...


@dataclass
class SliceContext:
    """One forward's slice bookkeeping: the hooks, the plan, and the sequence id of every stream token (1, M)."""

    hooks: SliceHooks
    plan: SlicePlan
    seq_idx: torch.Tensor
    pixels: torch.Tensor | None = field(default=None, repr=False)

    @property
    def rank(self) -> int:
        return self.hooks.rank

    def seq_at(self, token: int) -> int:
        return int(self.seq_idx[0, token])

    def continues(self, r: int) -> bool:
        """Whether slice r's first token belongs to the sequence of slice r-1's last token."""
        return r > 0 and self.seq_at(self.plan.ranges[r][0]) == self.seq_at(self.plan.ranges[r - 1][1] - 1)


# -- Mamba-2 across slices -----------------------------------------------------------------------------------------
def _conv_halo(ctx: SliceContext, xbc: torch.Tensor, width: int) -> torch.Tensor:
    """(b, conv_dim, l) pre-conv inputs of this slice -> (b, conv_dim, width - 1): the inputs just before it that
    belong to its first sequence (zeros elsewhere).

    Written so that every slice runs the same operations on the gathered tails (only index values differ): the
    gather's backward is a collective, and every rank must run it, in the same order.
    """
    k = width - 1
    tail = xbc[..., -k:] if xbc.shape[-1] >= k else F.pad(xbc, (k - xbc.shape[-1], 0))
    tails = torch.stack(ctx.hooks.gather(tail.contiguous()), dim=-2).flatten(-2)  # (b, conv_dim, W * k)
    start = ctx.plan.ranges[ctx.rank][0]
    index, keep = [], []
    for pos in range(start - k, start):  # stream position -> column of the slice that holds it
        j = next((j for j, (a, b) in enumerate(ctx.plan.ranges) if a <= pos < b), None)
        ok = j is not None and ctx.seq_at(pos) == ctx.seq_at(start)
        index.append(j * k + k - (ctx.plan.ranges[j][1] - pos) if ok else 0)
        keep.append(float(ok))
    halo = tails.index_select(-1, torch.tensor(index, device=xbc.device))
    return halo * torch.tensor(keep, device=xbc.device, dtype=xbc.dtype)


def _entering_state(ctx: SliceContext, final: torch.Tensor, carry: torch.Tensor) -> torch.Tensor:
    """Exclusive prefix over slices of (final state, decay): the state entering this slice (b, h, p, n).

    F_j = f_j + c_j F_{j-1} (c_j = 0 where slice j does not continue slice j-1's sequence) for every j on every rank
    (the same operations everywhere, see `_conv_halo`); this slice takes F_{r-1} if it continues it.
    """
    finals, carries = ctx.hooks.gather(final.contiguous()), ctx.hooks.gather(carry.contiguous())
    prefix, states = torch.zeros_like(final), []
    for j in range(ctx.plan.world):
        keep = float(ctx.continues(j))
        prefix = finals[j] + keep * carries[j][..., None, None] * prefix
        states.append(prefix)
    before = torch.stack(states)[max(ctx.rank - 1, 0)]
    return before * float(ctx.continues(ctx.rank))


def slice_mixer_forward(
    mixer: Mamba2Mixer, hidden_states: torch.Tensor, seq_idx: torch.Tensor | None, ctx: SliceContext
) -> torch.Tensor:
    """`mixer(hidden_states, seq_idx)` for one slice of a longer stream, exact given the other slices (see module
    docstring). hidden_states: (b, l, d_model) this slice's tokens; seq_idx: (b, l) their sequence ids."""
    A = mixer._A()
    z, xbc, dt = mixer._split(mixer.in_proj(hidden_states))
    xbc_t = xbc.transpose(1, 2)
    halo = _conv_halo(ctx, xbc_t, mixer.d_conv)
    conv_out, _ = causal_depthwise_conv(xbc_t, mixer.conv1d.weight[:, 0], mixer.conv1d.bias, seq_idx, halo)
    x, B, C = mixer._scan_inputs(F.silu(conv_out).transpose(1, 2))
    y, final = _scan_from_zero(mixer, x, dt, A, B, C, seq_idx)
    cdtype = torch.float64 if final.dtype == torch.float64 else torch.float32
    final = final.to(cdtype)
    log_decay = torch.cumsum(_discretize_dt(dt, mixer.dt_bias, True, mixer.dt_limit, cdtype) * A.to(cdtype), dim=1)
    first = torch.ones_like(log_decay[..., 0], dtype=torch.bool) if seq_idx is None else seq_idx == seq_idx[:, :1]
    carry = torch.exp(log_decay[:, -1]) * first.all(dim=1, keepdim=True).to(cdtype)  # (b, h); 0 if the state resets
    state = _entering_state(ctx, final, carry)  # (b, h, p, n)
    # y_t += exp(log_decay_t) * C_t . state, for tokens of the slice's first sequence
    C_heads = C.to(cdtype).repeat_interleave(mixer.nheads // mixer.ngroups, dim=2)  # (b, l, h, n)
    contrib = torch.einsum("blhn,bhpn->blhp", C_heads, state)
    y = y + (contrib * (torch.exp(log_decay) * first[..., None].to(cdtype))[..., None]).to(y.dtype)
    return mixer.out_proj(mixer.norm(y.flatten(2), z))


def _scan_from_zero(mixer: Mamba2Mixer, x, dt, A, B, C, seq_idx) -> tuple[torch.Tensor, torch.Tensor]:
    """The slice's SSD scan from a zero state: (y (b, l, h, p), final state (b, h, p, n)); mamba_ssm's fused scan
    when the mixer takes its kernels (`vamba.modeling.mamba_fused`), else ours."""
    kernels = fused_kernels(mixer.use_kernels, x)
    if kernels is None:
        return ssd_chunk_scan(x, dt, A, B, C, scan_chunk(mixer.chunk_size), D=mixer._D(), dt_bias=mixer.dt_bias,
                              dt_softplus=True, dt_limit=mixer.dt_limit, seq_idx=seq_idx, return_final_states=True)
    limit = {} if tuple(mixer.dt_limit) == (0.0, float("inf")) else {"dt_limit": mixer.dt_limit}
    seq = None if seq_idx is None else (seq_idx - seq_idx[:, :1]).to(torch.int32).contiguous()
    return kernels.mamba_chunk_scan_combined(
        x, dt, A, B, C, chunk_size=mixer.chunk_size, D=mixer._D(), z=None, dt_bias=mixer.dt_bias, dt_softplus=True,
        seq_idx=seq, return_final_states=True, **limit)


# -- cross-attention across slices ---------------------------------------------------------------------------------
def merge_partials(outs: list[torch.Tensor], lses: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact softmax attention from partials over disjoint key sets.

    outs: each (..., N, hd), normalised within its key set; lses: each (..., N) log-sum-exp of its scores (-inf
    where the set holds no visible key). Returns (output, log-sum-exp); rows that see no key anywhere get 0, -inf.
    """
    lse = torch.stack(lses)  # (S, ..., N)
    total = torch.logsumexp(lse, dim=0)
    seen = torch.isfinite(total)
    weights = torch.where(seen, torch.exp(lse - torch.where(seen, total, 0.0)), 0.0)  # (S, ..., N)
    out = (torch.stack(outs) * weights[..., None]).sum(0)
    return out, total


def attention_with_lse(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, visible: torch.Tensor, scale: float,
    block: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention returning its log-sum-exp, in key blocks of `block` (bounded memory).

    query: (B, H, N, hd); keys, values: (B, Hkv, M, hd) (GQA: H % Hkv == 0); visible: (B, N, M) bool.
    Returns: out (B, H, N, hd) (0 for rows with no visible key), lse (B, H, N) (-inf there).
    """
    rep = query.shape[1] // keys.shape[1]
    outs, lses = [], []
    for s in range(0, max(keys.shape[2], 1), block):
        k = keys[:, :, s : s + block].repeat_interleave(rep, dim=1).to(query.dtype)
        v = values[:, :, s : s + block].repeat_interleave(rep, dim=1).to(query.dtype)
        scores = (query @ k.transpose(-1, -2)) * scale
        scores = scores.masked_fill(~visible[:, None, :, s : s + block], float("-inf"))
        lse = torch.logsumexp(scores, dim=-1)
        probs = torch.exp(scores - torch.where(torch.isfinite(lse), lse, 0.0)[..., None])
        outs.append(probs @ v)
        lses.append(lse)
    return merge_partials(outs, lses) if len(outs) > 1 else (outs[0], lses[0])


def merge_across_slices(ctx: SliceContext, out: torch.Tensor, lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge this slice's cross-attention partial with every other slice's: (B, H, N, hd), (B, H, N)."""
    return merge_partials(ctx.hooks.gather(out.contiguous()), ctx.hooks.gather(lse.contiguous()))



# -- the slice's stream ---------------------------------------------------------------------------------------------
def slice_stream(model, ctx: SliceContext, dtype: torch.dtype) -> VideoStream:
    """This rank's slice of the visual stream: the vision tower on its own temporal patches only (one call, so
    ZeRO-3 gathers in step on every rank), with the slice's sample ids and grid positions. (1, m, d)."""
    plan, r = ctx.plan, ctx.rank
    if ctx.pixels is None:
        raise ValueError("context parallel: no pixels for this slice (ContextParallel.shard gives them)")
    device = model.visual.get_device()
    grids = [(p.t1 - p.t0, *plan.items[p.item][2][1:]) for p in plan.pieces[r]]
    pixels = ctx.pixels.to(device=device, dtype=model.visual.dtype)
    embeds = model.visual(pixels, grid_thw=torch.tensor(grids, device=device)).pooler_output
    start, end = plan.ranges[r]
    if embeds.shape[0] != end - start:
        raise ValueError(f"context parallel: slice {r} encodes {embeds.shape[0]} tokens, the plan says {end - start}")
    sample = ctx.seq_idx[:, start:end].to(device)
    return VideoStream(states=embeds.to(dtype)[None], sample_idx=sample, seq_idx=sample.to(torch.int32),
                       grid_positions=plan.grid_positions(r)[:, None].to(device))
