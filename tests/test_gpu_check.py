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
    """The whole check on CPU: every speed point measured for Qwen2-VL and Vamba's PyTorch mixers beside the
    ratio (no fused kernels here), the mixer layer beside its op-count prediction, the profiled prefill and the
    cross-attention's SDPA kernel; parity rows skipped only for the reasons that hold here; the tables printed
    and the JSON complete."""
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
    headers = [line for line in lines if line.startswith("| section | what |")]
    assert headers == ["| section | what | measured | paper (DESIGN.md 5) | account | status |",
                       "| section | what | Qwen2-VL | Vamba fused | Vamba PyTorch | fused / Qwen2-VL "
                       "| PyTorch / Qwen2-VL | status |"]
    assert len(lines) == len(rows) + len(headers)
    gpu_check = _load_gpu_check()
    speed = [r for r in rows if r["section"] in ("prefill", "train")]
    assert [(r["section"], r["frames"]) for r in speed] == gpu_check.POINTS["tiny"]
    for r in speed:
        assert r["qwen2vl"]["seconds"] > 0 and r["pytorch"]["seconds"] > 0 and r["fused"] == "-", r
        assert r["pytorch_ratio"] == pytest.approx(r["pytorch"]["seconds"] / r["qwen2vl"]["seconds"])
    layer = [r for r in rows if r["section"] == "mixer layer"]
    assert len(layer) == 2 and all(r["pytorch"]["seconds"] > 0 and r["predicted_calls"] > 0 for r in layer)
    (busy,) = [r for r in rows if r["section"] == "profile"]
    assert busy["pytorch"].startswith("no GPU") and busy["status"] == "ok"
    (sdpa,) = [r for r in rows if r["section"] == "sdpa"]
    assert sdpa["pytorch"] == "flash / flash"  # no mask: SDPA's fused kernel (CPU flash here), not math
    parity = [r for r in rows if r["section"] == "parity"]
    assert parity and all(r["status"].startswith("skipped") for r in parity)  # no CUDA here, no interpreter


def test_keeps_going_after_out_of_memory_and_errors(tmp_path: Path) -> None:
    """An out-of-memory ends that variant's section (larger points are reported, not run), an error is reported,
    the other variants still run, and a passed deadline skips the rest; each point is one row of the JSON."""
    gpu_check = _load_gpu_check()
    from vamba.efficiency.memory import get_profile

    profile = get_profile("tiny")
    calls = []

    def measure(model, profile, system, frames, train, device):
        calls.append((system, frames, train))
        if system == "qwen2vl" and frames >= 4 and not train:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        if system == "vamba" and train:
            raise RuntimeError("something else broke")
        return 0.5 * frames, 1.0

    out = tmp_path / "check.json"
    report = gpu_check.Report(out, {"device": "cpu"})
    points = [("prefill", 2), ("prefill", 4), ("prefill", 8), ("train", 2)]
    gpu_check.run_speed(report, profile, "cpu", False, time.monotonic() + 600, measure=measure, points=points)
    by = {(r["section"], r["frames"]): r for r in json.loads(out.read_text())["rows"]}
    assert by["prefill", 2]["qwen2vl"]["seconds"] == 1.0 and by["prefill", 2]["pytorch_ratio"] == 1.0
    assert by["prefill", 4]["qwen2vl"] == "OOM" and by["prefill", 8]["qwen2vl"] == "OOM at 4 frames"
    assert by["prefill", 8]["pytorch"]["seconds"] == 4.0 and by["prefill", 8]["pytorch_ratio"] is None
    assert by["train", 2]["pytorch"].startswith("error: RuntimeError: something else broke")
    assert by["train", 2]["qwen2vl"]["seconds"] == 1.0
    assert ("qwen2vl", 8, False) not in calls

    late = gpu_check.Report(tmp_path / "late.json", {})
    gpu_check.run_speed(late, profile, "cpu", False, time.monotonic() - 1, measure=measure, points=points[:2])
    assert all(r["qwen2vl"] == r["pytorch"] == "skipped (time budget)" for r in late.rows)


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
