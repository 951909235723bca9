"""DeepSpeed ZeRO-3 helper for model code: see whole parameters where a module must (init, copies).

Model code stays single-device; this is the one place it acknowledges partitioned parameters, because some
initialisations (a scaled residual projection, the cross-attention copy) happen after the weights exist.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch


def gathered(params: Iterable[torch.nn.Parameter], modifier_rank: int | None = 0):
    """Context in which ZeRO-3 partitioned `params` are whole; changes made on `modifier_rank` are kept on exit.

    A no-op for ordinary parameters, so callers need not know whether DeepSpeed is active.
    """
    params = list(params)
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed  # only reachable inside a DeepSpeed run

        return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)
    return contextlib.nullcontext()
