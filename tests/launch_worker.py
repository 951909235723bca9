"""Run under torchrun (gloo, CPU) by tests/test_launch.py: a worker that joins through `vamba.parallel.launch` and
then ends as its scenario says. Each rank writes its pid to <out_dir>/rank<r>.pid first, so the test can check
that no worker outlives the run.

    ok:    an all-reduce, then `launch.finish()`
    fail:  rank 1 raises while rank 0 waits in a barrier
    hang:  rank 1 sleeps while rank 0 waits in a barrier (VAMBA_DIST_TIMEOUT bounds the wait)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from vamba.parallel import launch


def main(out_dir: Path, scenario: str) -> None:
    launch.init("gloo")
    rank = dist.get_rank()
    (out_dir / f"rank{rank}.pid").write_text(str(os.getpid()))
    total = torch.tensor([rank + 1.0])
    dist.all_reduce(total)
    if scenario == "ok":
        (out_dir / f"rank{rank}.sum").write_text(str(total.item()))
    elif rank == 1 and scenario == "fail":
        raise RuntimeError("rank 1 failed on purpose")
    elif rank == 1 and scenario == "hang":
        time.sleep(3600)
    else:
        dist.barrier()


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]), sys.argv[2])
    except BaseException:
        launch.abort(1)
    launch.finish()
