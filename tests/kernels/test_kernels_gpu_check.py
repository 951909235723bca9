"""scripts/gpu_check.py's parity section, run on the fused path under Triton's interpreter at the tiny size: the
same code the GPU check runs at 7B (float16 here: bf16 `tl.dot` is wrong in the interpreter)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from kernel_harness import extra_present, kernels_fixture  # noqa: F401 (fixture)

if not extra_present():
    pytest.skip("optional `cuda` extra (triton + mamba_ssm) absent", allow_module_level=True)

from vamba.modeling.mamba_fused import fused_on_cpu  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def test_parity_rows_pass_on_the_fused_path(kernels, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    report = gpu_check.Report(tmp_path / "parity.json", {})
    calls = []

    def counted(*args, **kwargs):  # the fused rows really go through mamba_ssm's scan kernel
        calls.append(1)
        return kernels.mamba_chunk_scan_combined(*args, **kwargs)

    with fused_on_cpu(causal_conv1d_fn=None, mamba_chunk_scan_combined=counted):
        assert gpu_check.kernel_parity(report, "tiny", "cpu", [torch.float16])
    assert calls
    assert [r["what"].split(": ")[1] for r in report.rows] == [label for label, _, _ in gpu_check.CASES]
    for row in report.rows:
        assert row["status"].startswith("ok"), row
        assert 0 < row["error"] <= row["tolerance"]  # fp16: a real, nonzero difference within the bound
