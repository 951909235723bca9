"""`python -m vamba.train` / `torchrun --nproc_per_node=N -m vamba.train <hydra overrides>`."""

from __future__ import annotations

import hydra

from ..config import CONFIG_DIR, register_configs


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg) -> None:
    from .trainer import run

    run(cfg)
    exit_cleanly()


def exit_cleanly() -> None:
    """End a torchrun worker without running C++ static destructors.

    With gloo (CPU), tearing down the process group in interpreter shutdown intermittently aborts the finished
    process ("terminate called without an active exception" from a joinable std::thread), turning a completed
    run into a failure. Everything is already written and flushed here, so the worker exits at once.
    """
    import os
    import sys

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

if __name__ == "__main__":
    register_configs()
    main()
