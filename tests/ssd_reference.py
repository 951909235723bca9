"""Naive step-by-step Mamba-2 recurrence in float64, the ground truth for the chunked SSD scan.

Deliberately written with plain loops over batch rows and tokens and no code shared with
``vamba.modeling.ssd``, so that a mistake in the chunked algorithm cannot be mirrored here:

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T
    y_t = h_t C_t + D * x_t,   then y_t * silu(z_t) if a gate is given

The state restarts from zero whenever ``seq_idx`` changes; ``initial_states`` is the state before the first
token, so it only influences the first token's sequence.
"""

from __future__ import annotations

import math

import torch


def naive_ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
    seq_idx: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapes as ``ssd_chunk_scan``: x (b, l, h, p), dt (b, l, h), A (h,), B/C (b, l, g, n), D (h,) or (h, p),
    z (b, l, h, p), seq_idx (b, l), initial_states (b, h, p, n).

    Returns y (b, l, h, p) and the state after the last token (b, h, p, n), both float64.
    """
    x, dt, A, B, C = (t.double() for t in (x, dt, A, B, C))
    batch, seqlen, nheads, headdim = x.shape
    ngroups, dstate = B.shape[2], B.shape[3]
    heads_per_group = nheads // ngroups
    y = torch.zeros(batch, seqlen, nheads, headdim, dtype=torch.float64)
    final = torch.zeros(batch, nheads, headdim, dstate, dtype=torch.float64)

    for b in range(batch):
        if initial_states is not None:
            h_state = initial_states[b].double().clone()
        else:
            h_state = torch.zeros(nheads, headdim, dstate, dtype=torch.float64)
        for t in range(seqlen):
            if seq_idx is not None and t > 0 and int(seq_idx[b, t]) != int(seq_idx[b, t - 1]):
                h_state = torch.zeros(nheads, headdim, dstate, dtype=torch.float64)
            for head in range(nheads):
                group = head // heads_per_group
                step = float(dt[b, t, head])
                if dt_bias is not None:
                    step += float(dt_bias[head])
                if dt_softplus:
                    step = math.log1p(math.exp(step)) if step < 30 else step
                step = min(max(step, dt_limit[0]), dt_limit[1])
                decay = math.exp(step * float(A[head]))
                h_state[head] = decay * h_state[head] + step * torch.outer(x[b, t, head], B[b, t, group])
                out = h_state[head] @ C[b, t, group]
                if D is not None:
                    d = D.double()[head]
                    out = out + d * x[b, t, head]
                if z is not None:
                    gate = z[b, t, head].double()
                    out = out * gate * torch.sigmoid(gate)
                y[b, t, head] = out
        final[b] = h_state
    return y, final
