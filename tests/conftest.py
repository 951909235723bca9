"""Shared fixtures: small synthetic long-video data, generated once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """8 train / 4 eval videos of 8 frames at 56 px, 2 questions each, 8 captioned images."""
    from vamba.data.synthetic import SyntheticConfig, generate

    out = tmp_path_factory.mktemp("synthetic")
    generate(out, SyntheticConfig(train_videos=8, eval_videos=4, questions_per_video=2, num_frames=8, num_images=8))
    return out


def run_torchrun(args: list[str], nproc: int = 2, env: dict | None = None, timeout: int = 600,
                 check: bool = True) -> subprocess.CompletedProcess:
    """Run `torchrun --nproc_per_node=nproc <args>` on CPU with gloo; returns the completed process."""
    import socket

    with socket.socket() as s:  # a free port, so parallel or repeated runs never collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled",
                "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={port}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"torchrun failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc
