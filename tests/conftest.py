"""Shared fixtures: small synthetic long-video data, generated once per test session; where test data lives.

Data the project may redistribute is in `tests/fixtures/` (each folder's PROVENANCE.md gives source and licence).
Data it may not (Video-MME's annotations) or keeps outside at its owner's request (the release golden checkpoint)
is read from the shared folder `SHARED`: `<clone>/../shared`, or `VAMBA_SHARED_DIR`. A test that reads it is
marked `@pytest.mark.shared("<folder under SHARED>")` and skips, with one line naming the missing folder, where it
is absent; `VAMBA_REQUIRE_SHARED=1` (CI) makes that a failure instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
SHARED = Path(os.environ.get("VAMBA_SHARED_DIR", REPO.parent / "shared")).resolve()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip (or, with VAMBA_REQUIRE_SHARED=1, fail) a `shared` test whose folder is absent: one line per folder."""
    for mark in item.iter_markers("shared"):
        missing = next((p for p in (SHARED, SHARED / mark.args[0]) if not p.is_dir()), None)
        if missing is not None:
            reason = f"{missing} not found: data kept outside the project (VAMBA_SHARED_DIR names the shared folder)"
            if os.environ.get("VAMBA_REQUIRE_SHARED") == "1":
                pytest.fail(reason, pytrace=False)
            pytest.skip(reason)


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
