"""Mamba mixers for the video stream: Mamba-2 (the release model) and Mamba-1 (ablation).

Parameter names and shapes follow mamba_ssm's ``Mamba2`` / ``Mamba`` modules (transformers' ``Mamba2Mixer``
uses the same names), so checkpoints move between the three without renaming.

Each mixer has two implementations of one function:

* a fused CUDA path through mamba_ssm's kernels (and causal-conv1d) when ``use_kernels`` is set, the input
  lives on a CUDA device and the kernels import (`vamba.modeling.mamba_fused`: loaded lazily, so this module
  imports on machines without them). The kernel test lane runs it on CPU under Triton's interpreter.
* a pure-PyTorch path everywhere else (CPU, or GPUs without the packages): a depthwise causal convolution
  (`vamba.modeling.causal_conv`) that respects packed-sequence boundaries, then the chunked SSD scan of
  ``vamba.modeling.ssd`` (Mamba-2) or a time-chunked selective scan (Mamba-1). This path is the reference
  checked by the tests.

Packed sequences: ``seq_idx`` (b, l) int32, nondecreasing along l, gives each token's sample; neither the
convolution nor the scan carries information across a change of ``seq_idx``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .causal_conv import causal_depthwise_conv
from .mamba_fused import NO_DT_LIMIT as _NO_DT_LIMIT
from .mamba_fused import fused_kernels, mamba1_fused, mamba2_fused
from .ssd import _needs_grad, scan_chunk, ssd_chunk_scan
from .zero import gathered

__all__ = ["GatedRMSNorm", "Mamba1Mixer", "Mamba2Mixer", "Mamba2State", "build_mixer", "causal_depthwise_conv"]

# Tokens per piece of a no-grad mixer call (pieces bound the activations): CPU 4,096, cache-friendly; elsewhere (CUDA;
# meta stands for it in op counts) 16,384: few, large launches (~170 ATen calls per piece of a 7B layer, ~2 GB).
INFERENCE_PIECE_LEN = {"cpu": 4096, "accelerator": 16384}


def default_piece_len(device: torch.device | str) -> int:
    """Tokens per no-grad mixer piece on `device` unless a mixer sets ``inference_piece_len``."""
    return INFERENCE_PIECE_LEN.get(torch.device(device).type, INFERENCE_PIECE_LEN["accelerator"])


# ----------------------------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------------------------


class GatedRMSNorm(nn.Module):
    """RMSNorm of x * silu(z) over groups of ``group_size`` channels (mamba_ssm RMSNormGated, norm_before_gate=False).

    Elementwise in x's dtype, one pass per op; the mean of squares accumulated in float32 (float64 for float64).
    """

    def __init__(self, hidden_size: int, group_size: int, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        if hidden_size % group_size:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of group_size {group_size}")
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.group_size = group_size
        self.eps = eps

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x, z: (..., hidden_size) -> (..., hidden_size) in x.dtype."""
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        grad = _needs_grad(x, z, self.weight)
        gate = F.silu(z.to(x.dtype))
        h = (x * gate if grad else gate.mul_(x)).unflatten(-1, (-1, self.group_size))  # (..., groups, size)
        mean_sq = torch.linalg.vector_norm(h, dim=-1, keepdim=True, dtype=acc).square() / self.group_size
        scale = torch.rsqrt(mean_sq + self.eps)
        weight = self.weight.to(x.dtype).view(-1, self.group_size)
        # Without autograd h is our own temporary: scaled in place (in float32, written in x's dtype).
        h = h * scale.to(x.dtype) * weight if grad else h.mul_(scale).mul_(weight)
        return h.flatten(-2)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, group_size={self.group_size}, eps={self.eps}"


def _inverse_softplus_dt(n: int, dt_min: float, dt_max: float, dt_init_floor: float, device=None) -> torch.Tensor:
    """(n,) biases b with softplus(b) = dt, dt log-uniform in [dt_min, dt_max] and at least dt_init_floor.

    Log-uniform so that heads cover time scales from dt_min to dt_max evenly (mamba_ssm's init).
    """
    log_dt = torch.rand(n, device=device) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    dt = torch.exp(log_dt).clamp(min=dt_init_floor)
    # softplus^-1(dt) = log(exp(dt) - 1) = dt + log(1 - exp(-dt)); expm1 keeps it accurate for tiny dt.
    return dt + torch.log(-torch.expm1(-dt))


# ----------------------------------------------------------------------------------------------------------------
# Mamba-2
# ----------------------------------------------------------------------------------------------------------------


def _reset_finished_sequences(state: Mamba2State, seq_idx: torch.Tensor) -> None:
    """Zero the state of rows whose new piece starts a sequence other than the one the state belongs to, then
    remember the id of each row's last token. seq_idx: (b, l)."""
    if state.last_seq_idx is not None:
        same = (seq_idx[:, 0] == state.last_seq_idx.to(seq_idx.device)).to(state.ssm_state.dtype)  # (b,)
        state.ssm_state.mul_(same[:, None, None, None])
        state.conv_state.mul_(same[:, None, None].to(state.conv_state.dtype))
    state.last_seq_idx = seq_idx[:, -1].clone()


@dataclass
class Mamba2State:
    """Streaming state of a Mamba2Mixer, updated in place by ``forward(..., state=...)``.

    conv_state: (b, conv_dim, d_conv - 1), the last d_conv - 1 pre-convolution inputs.
    ssm_state: (b, nheads, headdim, d_state), the SSM state after the last token.
    last_seq_idx: optional (b,) sequence id of the last token seen, kept up to date when ``seq_idx`` is passed.
        With ids numbered continuously across the streamed pieces it lets a piece that starts a new sequence
        drop the carried state (without it, the state always continues into the piece's first sequence).
    """

    conv_state: torch.Tensor
    ssm_state: torch.Tensor
    last_seq_idx: torch.Tensor | None = None


class Mamba2Mixer(nn.Module):
    """Mamba-2 mixer (mamba_ssm ``Mamba2`` with rmsnorm, norm_before_gate=False, no d_ssm/MLP split).

    in_proj -> [z, x, B, C, dt]; (x, B, C) -> depthwise causal conv -> SiLU -> SSD scan (dt softplus with bias,
    D skip) -> gated RMSNorm with z -> out_proj.

    ``inference_piece_len``: when autograd is off, both paths process inputs longer than this many tokens in
    pieces, passing the streaming state between them (same result, activation memory bounded by one piece). 0
    disables it; None (default) takes `piece_len`'s per-device length. Settable per instance.
    """

    inference_piece_len: int | None = None

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        chunk_size: int = 256,
        A_init_range: tuple[float, float] = (1, 16),
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_limit: tuple[float, float] = _NO_DT_LIMIT,
        bias: bool = False,
        conv_bias: bool = True,
        conv_init: float | None = None,
        D_has_hdim: bool = False,
        norm_eps: float = 1e-5,
        layer_idx: int | None = None,
        use_kernels: bool = True,
        out_proj_scale: float = 1.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.conv_init = conv_init
        self.D_has_hdim = D_has_hdim
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"d_inner = expand * d_model = {self.d_inner} is not a multiple of headdim {headdim}")
        self.headdim = headdim
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"nheads {self.nheads} is not a multiple of ngroups {ngroups}")
        self.ngroups = ngroups
        self.chunk_size = chunk_size
        self.A_init_range = tuple(A_init_range)
        if not 0 < self.A_init_range[0] <= self.A_init_range[1]:
            raise ValueError(f"A_init_range must satisfy 0 < low <= high, got {self.A_init_range}")
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.dt_limit = tuple(float(v) for v in dt_limit)
        self.layer_idx = layer_idx
        self.use_kernels = use_kernels
        self.conv_dim = self.d_inner + 2 * ngroups * d_state

        # Output order [z, x, B, C, dt], as mamba_ssm, so fused kernels can split it themselves.
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * ngroups * d_state + self.nheads, bias=bias, **factory)
        self.conv1d = nn.Conv1d(
            self.conv_dim, self.conv_dim, kernel_size=d_conv, groups=self.conv_dim, padding=d_conv - 1,
            bias=conv_bias, **factory,
        )
        self.dt_bias = nn.Parameter(torch.empty(self.nheads, **factory))
        self.A_log = nn.Parameter(torch.empty(self.nheads, **factory))
        # D per head, or per channel (D_has_hdim, viewed as (nheads, headdim)), as mamba_ssm stores it.
        self.D = nn.Parameter(torch.empty(self.d_inner if D_has_hdim else self.nheads, **factory))
        # Optimizers built like mamba_ssm's skip weight decay on these (decaying A_log or dt_bias towards 0
        # would pull every head to the same time scale).
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.norm = GatedRMSNorm(self.d_inner, group_size=self.d_inner // ngroups, eps=norm_eps, **factory)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)
        self.out_proj_scale = out_proj_scale
        # Children initialised themselves (PyTorch defaults = mamba_ssm's); under DeepSpeed's zero.Init they are
        # already partitioned here, so only this module's own parameters are set, plus the gathered rescales.
        self._init_conv()
        self._init_ssm_parameters()
        self._scale_out_proj()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """mamba_ssm's Mamba2 init: default Linear/Conv1d init (conv weight ~ U(+-conv_init) when set),
        A ~ U[A_init_range] (stored as log), dt ~ log-U[dt_min, dt_max] floored (stored as inverse-softplus bias),
        D = 1, norm weight = 1, and out_proj scaled by `out_proj_scale` (GPT-2's 1/sqrt(n_layers) for residual
        branches)."""
        self.in_proj.reset_parameters()
        self.conv1d.reset_parameters()
        self.out_proj.reset_parameters()
        self.norm.reset_parameters()
        self._init_conv()
        self._init_ssm_parameters()
        self._scale_out_proj()

    @torch.no_grad()
    def _init_conv(self) -> None:
        if self.conv_init is not None:
            with gathered([self.conv1d.weight]):
                nn.init.uniform_(self.conv1d.weight, -self.conv_init, self.conv_init)

    @torch.no_grad()
    def _scale_out_proj(self) -> None:
        if self.out_proj_scale != 1.0:
            with gathered([self.out_proj.weight]):
                self.out_proj.weight.mul_(self.out_proj_scale)

    @torch.no_grad()
    def _init_ssm_parameters(self) -> None:
        device = self.A_log.device
        A = torch.empty(self.nheads, dtype=torch.float32, device=device).uniform_(*self.A_init_range)
        self.A_log.copy_(torch.log(A))
        self.dt_bias.copy_(_inverse_softplus_dt(self.nheads, self.dt_min, self.dt_max, self.dt_init_floor, device))
        self.D.fill_(1.0)

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> Mamba2State:
        """Zero state for streaming (= the start of a sequence).

        ``dtype`` applies to conv_state (default: the parameters' dtype). ssm_state is kept in float32 (float64
        for float64 parameters), the scan's accumulation precision, so chunked prefill matches a single pass.
        """
        weight = self.in_proj.weight
        device = weight.device if device is None else device
        conv_dtype = weight.dtype if dtype is None else dtype
        ssm_dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
        return Mamba2State(
            conv_state=torch.zeros(batch_size, self.conv_dim, self.d_conv - 1, device=device, dtype=conv_dtype),
            ssm_state=torch.zeros(
                batch_size, self.nheads, self.headdim, self.d_state, device=device, dtype=ssm_dtype
            ),
        )

    def forward(
        self, hidden_states: torch.Tensor, seq_idx: torch.Tensor | None = None, state: Mamba2State | None = None
    ) -> torch.Tensor:
        """hidden_states: (b, l, d_model) -> (b, l, d_model).

        seq_idx: (b, l) int32 packed-sequence ids (nondecreasing). state: continue from and update this streaming
        state in place (values are stored detached: the state is a cache, not part of the autograd graph).
        """
        kernels = fused_kernels(self.use_kernels, hidden_states)
        run = self._forward_torch if kernels is None else functools.partial(self._forward_cuda, kernels)
        piece = self.piece_len(hidden_states.device)
        if torch.is_grad_enabled() or not piece or hidden_states.shape[1] <= piece:
            return run(hidden_states, seq_idx, state)
        # Without autograd, stream long inputs through the mixer piece by piece. The state carries everything
        # across pieces, so the result is the same, while activations (in_proj output, conv, norm: ~10 full-width
        # tensors per token) only exist for one piece: bounded memory, and cache-friendly at any length.
        if state is None:
            state = self.allocate_state(hidden_states.shape[0], device=hidden_states.device)
        out = None
        for start in range(0, hidden_states.shape[1], piece):
            sl = slice(start, start + piece)
            y = run(hidden_states[:, sl], seq_idx[:, sl] if seq_idx is not None else None, state)
            if out is None:
                out = y.new_empty(*hidden_states.shape[:2], y.shape[-1])
            out[:, sl] = y
        return out

    def piece_len(self, device: torch.device | str) -> int:
        """Tokens per no-grad piece on `device`: ``inference_piece_len``, or when None `default_piece_len`."""
        return default_piece_len(device) if self.inference_piece_len is None else self.inference_piece_len

    def _D(self) -> torch.Tensor:
        """The skip D as the scan takes it: (h,) or, with D_has_hdim, (h, p)."""
        return self.D.view(self.nheads, self.headdim) if self.D_has_hdim else self.D

    def _A(self) -> torch.Tensor:
        """(h,) negative decay rates; exp in float32 at least: in half precision exp(A_log) rounds badly."""
        return -torch.exp(self.A_log.to(torch.promote_types(self.A_log.dtype, torch.float32)))

    def _split(self, zxbcdt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(b, l, d_in_proj) -> z (b, l, d_inner), xBC (b, l, conv_dim), dt (b, l, h)."""
        return zxbcdt.split([self.d_inner, self.conv_dim, self.nheads], dim=-1)

    def _scan_inputs(self, xBC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Activated conv output (b, l, conv_dim) -> x (b, l, h, p), B (b, l, g, n), C (b, l, g, n)."""
        x, B, C = xBC.split([self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        return (
            x.unflatten(-1, (self.nheads, self.headdim)),
            B.unflatten(-1, (self.ngroups, self.d_state)),
            C.unflatten(-1, (self.ngroups, self.d_state)),
        )

    def _forward_torch(
        self, hidden_states: torch.Tensor, seq_idx: torch.Tensor | None, state: Mamba2State | None
    ) -> torch.Tensor:
        """Pure-PyTorch path (any device). hidden_states: (b, l, d_model)."""
        if state is not None and seq_idx is not None:
            _reset_finished_sequences(state, seq_idx)
        A = self._A()
        z, xBC, dt = self._split(self.in_proj(hidden_states))
        conv_out, conv_state = causal_depthwise_conv(
            xBC.transpose(1, 2), self.conv1d.weight[:, 0], self.conv1d.bias, seq_idx,
            state.conv_state if state is not None else None,
        )
        conv_out = F.silu(conv_out, inplace=not _needs_grad(conv_out))
        x, B, C = self._scan_inputs(conv_out.transpose(1, 2))
        # Long videos make every full-length activation large: drop references as soon as they are unused so that
        # the conv output is freed before the norm allocates its own temporaries.
        del conv_out
        result = ssd_chunk_scan(
            x, dt, A, B, C, scan_chunk(self.chunk_size), D=self._D(), dt_bias=self.dt_bias, dt_softplus=True,
            dt_limit=self.dt_limit, seq_idx=seq_idx, initial_states=state.ssm_state if state is not None else None,
            return_final_states=state is not None,
        )
        del x, B, C, dt
        if state is not None:
            y, ssm_state = result
            state.conv_state.copy_(conv_state.detach())
            state.ssm_state.copy_(ssm_state.detach())
        else:
            y = result
        y = self.norm(y.flatten(2), z)
        return self.out_proj(y)

    def _forward_cuda(
        self, kernels: SimpleNamespace, hidden_states: torch.Tensor, seq_idx: torch.Tensor | None,
        state: Mamba2State | None,
    ) -> torch.Tensor:
        """mamba_ssm's fused kernels (`vamba.modeling.mamba_fused`, which says which kernels run when)."""
        if state is not None and seq_idx is not None:
            _reset_finished_sequences(state, seq_idx)
        return mamba2_fused(self, kernels, hidden_states, seq_idx, state)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"headdim={self.headdim}, nheads={self.nheads}, ngroups={self.ngroups}, chunk_size={self.chunk_size}"
        )


# ----------------------------------------------------------------------------------------------------------------
# Mamba-1 (ablation)
# ----------------------------------------------------------------------------------------------------------------

# Bound on the (b, T, d_inner, d_state) discretised tensors built per time chunk of the Mamba-1 scan.
_MAMBA1_MAX_CHUNK_ELEMENTS = 1 << 22


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mamba-1 selective scan in PyTorch (delta always goes through softplus, as in the Mamba block).

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * u_t * B_t;  y_t = h_t . C_t + D * u_t;  y_t *= silu(z_t)

    A sequential loop over time: this variant only serves the ablation. Discretisation is vectorised per time
    chunk, whose size bounds the (b, T, d, n) temporaries.

    Args:
        u, delta, z: (b, l, d); A: (d, n); B, C: (b, l, n); D, delta_bias: (d,); seq_idx: (b, l) or None (the state
        restarts from zero where it changes).

    Returns: (b, l, d) in u.dtype.
    """
    batch, seqlen, dim = u.shape
    dstate = A.shape[1]
    cdtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    delta = delta.to(cdtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(cdtype)
    delta = F.softplus(delta)
    A, B, C, u_c = A.to(cdtype), B.to(cdtype), C.to(cdtype), u.to(cdtype)
    keep = None
    if seq_idx is not None:
        # keep[t] = 0 where token t starts a new sequence: the previous state is dropped.
        keep = torch.ones(batch, seqlen, dtype=cdtype, device=u.device)
        keep[:, 1:] = (seq_idx[:, 1:] == seq_idx[:, :-1]).to(cdtype)

    step = max(1, _MAMBA1_MAX_CHUNK_ELEMENTS // (batch * dim * dstate))
    h = u.new_zeros(batch, dim, dstate, dtype=cdtype)
    ys = []
    for start in range(0, seqlen, step):
        sl = slice(start, min(start + step, seqlen))
        decay = torch.exp(delta[:, sl, :, None] * A)  # (b, T, d, n)
        if keep is not None:
            decay = decay * keep[:, sl, None, None]
        inp = (delta[:, sl] * u_c[:, sl])[..., None] * B[:, sl, None, :]  # (b, T, d, n)
        for t in range(decay.shape[1]):
            h = decay[:, t] * h + inp[:, t]
            ys.append(torch.einsum("bdn,bn->bd", h, C[:, start + t]))
    y = torch.stack(ys, dim=1)  # (b, l, d)
    if D is not None:
        y = y + u_c * D.to(cdtype)
    if z is not None:
        y = y * F.silu(z.to(cdtype))
    return y.to(u.dtype)


class Mamba1Mixer(nn.Module):
    """Mamba-1 mixer (mamba_ssm ``Mamba``), for the mixer ablation.

    in_proj -> (x, z); x -> depthwise causal conv -> SiLU -> x_proj -> (dt_low, B, C); dt = dt_proj(dt_low) ->
    selective scan with per-channel diagonal A (d_inner, d_state) and D skip, gated by silu(z) -> out_proj.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        bias: bool = False,
        conv_bias: bool = True,
        layer_idx: int | None = None,
        use_kernels: bool = True,
        out_proj_scale: float = 1.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if dt_init not in ("random", "constant"):
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.dt_min, self.dt_max, self.dt_init, self.dt_scale = dt_min, dt_max, dt_init, dt_scale
        self.dt_init_floor = dt_init_floor
        self.layer_idx = layer_idx
        self.use_kernels = use_kernels

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner, padding=d_conv - 1,
            bias=conv_bias, **factory,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, d_state, **factory))
        self.D = nn.Parameter(torch.empty(self.d_inner, **factory))
        for p in (self.A_log, self.D):
            p._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)
        self.out_proj_scale = out_proj_scale
        self._init_ssm_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """mamba_ssm's Mamba init: dt_proj weight ~ U(+-dt_rank^-0.5 * dt_scale) (or constant), dt_proj bias =
        inverse-softplus of log-uniform dt, A = 1..d_state per channel (S4D-real, stored as log), D = 1."""
        for sub in (self.in_proj, self.conv1d, self.x_proj, self.out_proj):
            sub.reset_parameters()
        self._init_ssm_parameters()

    @torch.no_grad()
    def _init_ssm_parameters(self) -> None:
        # dt_proj and out_proj are children: under zero.Init they are partitioned by now, hence `gathered`.
        with gathered([self.dt_proj.weight, self.dt_proj.bias, self.out_proj.weight]):
            self._init_dt_and_scale()
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=self.A_log.device).expand(self.d_inner, -1)
        self.A_log.copy_(torch.log(A))
        self.D.fill_(1.0)

    def _init_dt_and_scale(self) -> None:
        std = self.dt_rank**-0.5 * self.dt_scale
        if self.dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        else:
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt_bias = _inverse_softplus_dt(self.d_inner, self.dt_min, self.dt_max, self.dt_init_floor, self.A_log.device)
        self.dt_proj.bias.copy_(dt_bias)
        if self.out_proj_scale != 1.0:
            self.out_proj.weight.mul_(self.out_proj_scale)

    def forward(self, hidden_states: torch.Tensor, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        """hidden_states: (b, l, d_model) -> (b, l, d_model); seq_idx: (b, l) packed-sequence ids or None."""
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)  # (b, l, d_inner) each
        A = -torch.exp(self.A_log.to(torch.promote_types(self.A_log.dtype, torch.float32)))  # (d_inner, d_state)
        conv_weight = self.conv1d.weight[:, 0]  # (d_inner, d_conv)
        kernels = fused_kernels(self.use_kernels, hidden_states)
        if kernels is not None and kernels.selective_scan_fn is not None and seq_idx is None:
            return mamba1_fused(self, kernels, x, z, A)

        conv_out, _ = causal_depthwise_conv(x.transpose(1, 2), conv_weight, self.conv1d.bias, seq_idx)
        x = F.silu(conv_out).transpose(1, 2)  # (b, l, d_inner)
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)  # bias is added inside the scan, before softplus
        y = selective_scan(x, dt, A, B, C, D=self.D, z=z, delta_bias=self.dt_proj.bias, seq_idx=seq_idx)
        return self.out_proj(y)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"dt_rank={self.dt_rank}"
        )


def build_mixer(kind: str, d_model: int, **kwargs: Any) -> nn.Module | None:
    """Video-stream mixer for a config's ``mixer_type``: "mamba2", "mamba1", or "none" (returns None).

    kwargs go to the mixer's constructor (d_state, d_conv, ..., layer_idx, device, dtype).
    """
    if kind == "mamba2":
        return Mamba2Mixer(d_model, **kwargs)
    if kind == "mamba1":
        return Mamba1Mixer(d_model, **kwargs)
    if kind == "none":
        return None
    raise ValueError(f"unknown mixer kind {kind!r}; expected 'mamba2', 'mamba1' or 'none'")
