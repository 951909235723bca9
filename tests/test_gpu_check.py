"""scripts/gpu_check.sh: the one-command GPU check runs end to end on CPU at the tiny size (--tiny), without the
packages the GPU machine lacks, and keeps going (and keeps its JSON) through out-of-memory and other failures."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vamba.modeling.compat import TESTED

REPO = Path(__file__).resolve().parent.parent
# Not on the GPU machine the check is written for: importing any of them must not be needed.
ABSENT_THERE = ("hydra", "omegaconf", "av", "decord", "deepspeed", "wandb", "datasets", "flash_attn", "causal_conv1d")

_RECORDER = """
import atexit, json, os, sys
def _dump():
    names = sorted({m.split(".")[0] for m in sys.modules} & set(os.environ["GPU_CHECK_WATCH"].split(",")))
    with open(os.environ["GPU_CHECK_IMPORTS"], "w") as fh:
        json.dump(names, fh)
atexit.register(_dump)
"""


def _load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_end_to_end(tmp_path: Path) -> None:
    """The whole check on CPU: every prefill and training row measured, beside its memory account; parity rows
    skipped only for the reasons that hold here; the table printed and the JSON complete."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_RECORDER)
    out = tmp_path / "check.json"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(hook), "GPU_CHECK_WATCH": ",".join(ABSENT_THERE),
           "GPU_CHECK_IMPORTS": str(tmp_path / "imports.json"), "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--tiny", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((tmp_path / "imports.json").read_text()) == []

    doc = json.loads(out.read_text())
    assert doc["complete"] and doc["env"]["device"] == "cpu"
    assert doc["env"]["transformers"].startswith(tuple(f"{t}." for t in TESTED))
    rows = doc["rows"]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| section | what | measured") and len(lines) == len(rows) + 1
    gpu_check = _load_gpu_check()
    jobs = gpu_check.JOBS["tiny"]
    measured = [r for r in rows if r["section"] in ("prefill", "train")]
    assert [(r["system"], r["frames"], r["section"] == "train") for r in measured] == jobs
    for r in measured:
        assert r["status"] == "ok" and r["seconds"] > 0 and r["measured_gb"] > 0, r
        if r["section"] == "prefill":  # the account's prediction beside the measurement
            assert r["account_gb"] > 0 and r["account"] != "-"
    parity = [r for r in rows if r["section"] == "parity"]
    assert parity and all(r["status"].startswith("skipped") for r in parity)  # no CUDA here, no interpreter


def test_keeps_going_after_out_of_memory_and_errors(tmp_path: Path) -> None:
    """An out-of-memory ends that kind of job (larger frame counts are reported, not run), an error is reported,
    the other kinds still run, each row is in the JSON as soon as it is done, and a passed deadline skips the rest."""
    gpu_check = _load_gpu_check()
    from vamba.efficiency.memory import get_profile

    profile = get_profile("tiny")
    calls = []

    def measure(model, profile, system, frames, train, device):
        calls.append((system, frames))
        if system == "qwen2vl_stock" and frames >= 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        if system == "qwen2vl" and train:
            raise RuntimeError("something else broke")
        return gpu_check._measure(model, profile, system, frames, train, device)

    out = tmp_path / "check.json"
    report = gpu_check.Report(out, {"device": "cpu"})
    jobs = [("qwen2vl_stock", 2, False), ("qwen2vl_stock", 4, False), ("qwen2vl_stock", 8, False),
            ("qwen2vl", 2, True), ("qwen2vl", 2, False)]
    gpu_check.run_jobs(report, profile, "cpu", False, time.monotonic() + 600, None, jobs=jobs, measure=measure)
    status = [r["status"] for r in report.rows]
    assert status[:3] == ["ok", "OOM", "OOM (at 4 frames)"]
    assert status[3].startswith("error: RuntimeError: something else broke") and status[4] == "ok"
    assert ("qwen2vl_stock", 8) not in calls
    assert [r["status"] for r in json.loads(out.read_text())["rows"]] == status

    late = gpu_check.Report(tmp_path / "late.json", {})
    gpu_check.run_jobs(late, profile, "cpu", False, time.monotonic() - 1, None, jobs=jobs[:2], measure=measure)
    assert [r["status"] for r in late.rows] == ["skipped (time budget)"] * 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_refuses_without_cuda_unless_tiny() -> None:
    assert _load_gpu_check().main([]) == 2


def test_fused_switch_reaches_our_mixers_only():
    """Turning the fused path on must not switch on transformers' own `use_kernels` (the hub `kernels` package,
    absent on GPU machines: on the first real GPU run every model row failed with 'Kernels are not available')."""
    from vamba.efficiency.memory import get_profile
    from vamba.modeling.mamba2 import Mamba2Mixer

    gpu_check = _load_gpu_check()
    model = gpu_check._build(get_profile("tiny"), "vamba", "cpu", fused=True)
    mixers = [m for m in model.modules() if isinstance(m, Mamba2Mixer)]
    assert mixers and all(m.use_kernels for m in mixers)
    assert not model.use_kernels and not model.model.language_model.use_kernels
