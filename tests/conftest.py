"""Shared fixtures: small synthetic long-video data, generated once per test session; where test data lives.

Data the project may redistribute is in `tests/fixtures/` (each folder's PROVENANCE.md gives source and licence).
Data it may not (Video-MME's annotations) is read from the shared folder `SHARED`: `<clone>/../shared`, or
`VAMBA_SHARED_DIR`. A test that reads it is marked `@pytest.mark.shared("<folder under SHARED>")` and skips, with
one line naming the missing folder, where it is absent; `VAMBA_REQUIRE_SHARED=1` (CI) makes that a failure instead.
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
    """Run `torchrun --nproc_per_node=nproc <args>` on CPU with gloo; returns the completed process.

    torchrun and its workers run in a session of their own, killed as a whole when the run ends (a timeout, a
    failure, or a worker left behind), so no rank outlives its test; collectives time out after
    `VAMBA_DIST_TIMEOUT` seconds (300 here), so a rank waiting on a dead peer fails the test instead of hanging."""
    import signal
    import socket

    with socket.socket() as s:  # a free port, so parallel or repeated runs never collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled",
                "TOKENIZERS_PARALLELISM": "false", "VAMBA_DIST_TIMEOUT": "300", **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={port}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=REPO,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"torchrun timed out after {timeout} s:\n{stdout[-4000:]}\n{stderr[-6000:]}") from None
    finally:
        try:  # whatever is left of the session (normally nothing: torchrun reaps its workers)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    done = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    if check and done.returncode != 0:
        raise AssertionError(f"torchrun failed ({done.returncode}):\n{stdout[-4000:]}\n{stderr[-6000:]}")
    return done
