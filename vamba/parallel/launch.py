"""A torchrun worker's process group, start to exit: one init with a collective timeout, one clean way out.

Why: with gloo (CPU), a worker whose interpreter exits with its process group alive intermittently aborts ("terminate
called without an active exception" from gloo's threads), failing a finished run; a failed worker leaves its peers
blocked in a collective, which must fail after a bounded time instead of hanging the job. Every entry point that may
run under torchrun joins through `init` and leaves through `finish` or `abort`. `VAMBA_DIST_TIMEOUT` (seconds)
bounds every collective; the default, 30 minutes, is torch's own for gloo.
"""

from __future__ import annotations

import os
import sys
import traceback
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist


def timeout() -> timedelta:
    """How long a collective may wait for its peers before it raises (`VAMBA_DIST_TIMEOUT`, seconds)."""
    raw = os.environ.get("VAMBA_DIST_TIMEOUT", "1800")
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"VAMBA_DIST_TIMEOUT={raw!r}: expected a number of seconds") from None
    if seconds <= 0:
        raise ValueError(f"VAMBA_DIST_TIMEOUT={raw!r}: expected a positive number of seconds")
    return timedelta(seconds=seconds)


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def init(backend: str | None = None) -> None:
    """Join the default process group (nccl on CUDA, else gloo) unless already joined, with `timeout()`."""
    if not initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"), timeout=timeout())


def _leave(code: int) -> NoReturn:
    if initialized():
        dist.destroy_process_group()  # every group, the context-parallel subgroups included
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no C++ static destructors: nothing is left to run and they are what aborts


def finish() -> None:
    """End a finished worker: wait for its peers, destroy every process group, exit 0 at once (no-op without one)."""
    if initialized():
        dist.barrier()
        _leave(0)


def abort(code: int = 1) -> NoReturn:
    """End a failed worker: print the traceback being handled, destroy the process groups without waiting for the
    peers (they may be the reason), exit with `code` (a `SystemExit`'s own); torchrun then stops the others."""
    exc = sys.exc_info()[1]
    if isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, int) else 1
    elif exc is not None:
        traceback.print_exc()
    _leave(code)
