"""Torchrun workers end cleanly (`vamba.parallel.launch`): a finished run exits 0 without gloo's exit-time abort, a
failed rank fails the run quickly with its traceback, a hung rank is bounded by the collective timeout, and no
worker process outlives its run (`conftest.run_torchrun` kills the run's whole session)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import REPO, run_torchrun

WORKER = str(REPO / "tests" / "launch_worker.py")


def _alive(out: Path) -> list[int]:
    pids = [int(p.read_text()) for p in out.glob("rank*.pid")]
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    return alive


@pytest.mark.multiprocess
def test_a_finished_run_exits_cleanly(tmp_path):
    proc = run_torchrun([WORKER, str(tmp_path), "ok"])
    assert [float((tmp_path / f"rank{r}.sum").read_text()) for r in range(2)] == [3.0, 3.0]
    assert "terminate called" not in proc.stderr
    assert len(list(tmp_path.glob("rank*.pid"))) == 2 and not _alive(tmp_path)


@pytest.mark.multiprocess
def test_a_failed_rank_fails_the_run_with_its_traceback(tmp_path):
    start = time.monotonic()
    proc = run_torchrun([WORKER, str(tmp_path), "fail"], check=False, timeout=300)
    assert proc.returncode != 0
    assert "rank 1 failed on purpose" in proc.stdout + proc.stderr
    assert "terminate called" not in proc.stderr
    assert time.monotonic() - start < 200  # not a wait for a collective timeout
    assert not _alive(tmp_path)


@pytest.mark.multiprocess
def test_a_hung_rank_is_bounded_by_the_collective_timeout(tmp_path):
    start = time.monotonic()
    proc = run_torchrun([WORKER, str(tmp_path), "hang"], check=False, timeout=300, env={"VAMBA_DIST_TIMEOUT": "3"})
    assert proc.returncode != 0
    assert "timed out" in (proc.stdout + proc.stderr).lower()  # rank 0's barrier gave up, not the test harness
    assert time.monotonic() - start < 200
    assert not _alive(tmp_path)


def test_the_timeout_is_read_from_the_environment(monkeypatch):
    from vamba.parallel import launch

    monkeypatch.setenv("VAMBA_DIST_TIMEOUT", "42")
    assert launch.timeout().total_seconds() == 42
    monkeypatch.setenv("VAMBA_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="VAMBA_DIST_TIMEOUT='soon'"):
        launch.timeout()
