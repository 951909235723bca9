"""Context parallel on the fused path: a slice's Mamba-2 step with mamba_ssm's scan (Triton interpreter) equals the
same step with our PyTorch scan, forward and backward (tests/test_context_parallel.py proves the PyTorch step exact
against the single-device mixer across real processes)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from kernel_harness import extra_present, kernels_fixture, rel_err  # noqa: F401 (fixture)

if not extra_present():
    pytest.skip("optional `cuda` extra (triton + mamba_ssm) absent", allow_module_level=True)

from vamba.modeling.mamba2 import Mamba2Mixer  # noqa: E402
from vamba.modeling.mamba_fused import fused_on_cpu  # noqa: E402
from vamba.modeling.video_slice import SliceContext, plan_slices, slice_mixer_forward  # noqa: E402


class FakeGroup:
    """One slice of a group of 3 in one process: the other slices' pieces are fixed random tensors, drawn in call
    order, so two runs that make the same calls see the same group."""

    def __init__(self, rank: int):
        self.rank, self.calls = rank, 0

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(100 + self.calls)
        self.calls += 1
        pieces = [0.3 * torch.randn(tensor.shape, generator=gen, dtype=tensor.dtype) for _ in range(3)]
        pieces[self.rank] = tensor
        return pieces


@pytest.mark.parametrize("packed", [False, True])
def test_slice_step_fused_equals_torch(kernels, packed):
    torch.manual_seed(0)
    mixer = Mamba2Mixer(64, d_state=16, headdim=16, chunk_size=8)
    samples = [0, 1] if packed else [0, 0]
    items = [("video", 0, (3, 4, 4), samples[0]), ("video", 1, (3, 4, 4), samples[1])]  # 4 tokens per patch
    plan = plan_slices(items, merge=2, world=3)
    start, end = plan.ranges[1]
    seq = plan.sample_idx()
    x = torch.randn(1, end - start, 64, requires_grad=True)
    outs = {}
    for fused in (False, True):
        ctx = SliceContext(FakeGroup(1), plan, seq)
        mixer.zero_grad()
        x.grad = None
        local_seq = seq[:, start:end].to(torch.int32)
        with fused_on_cpu() if fused else contextlib.nullcontext():
            y = slice_mixer_forward(mixer, x, local_seq, ctx)
        y.square().sum().backward()
        outs[fused] = (y.detach(), x.grad.clone(), mixer.in_proj.weight.grad.clone(), mixer.A_log.grad.clone())
    for a, b in zip(outs[True], outs[False]):
        assert 0 < rel_err(a, b) < 1e-4  # not 0: the two runs did take different scans
