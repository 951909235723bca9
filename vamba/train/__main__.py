"""`python -m vamba.train` / `torchrun --nproc_per_node=N -m vamba.train <hydra overrides>`."""

from __future__ import annotations

import hydra

from ..config import CONFIG_DIR, register_configs


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg) -> None:
    from .trainer import run

    run(cfg)


if __name__ == "__main__":
    register_configs()
    main()
