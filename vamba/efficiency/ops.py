"""What one Mamba-2 mixer layer asks of a GPU, counted on the meta device: `vamba bench --ops`.

Eager PyTorch on a GPU takes at least ~10 µs of host time per ATen call and bytes written / ~3 TB/s (H100). Both
are counted without a GPU: a `TorchDispatchMode` sees every ATen call of a mixer built on the meta device (which
takes the accelerator's settings: SSD group bound, piece length) at a flavor's shapes. tests/test_efficiency.py
holds the counts under the targets of docs/efficiency.md ("Op counts").
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vamba.modeling.flavors import get_flavor
from vamba.modeling.mamba2 import Mamba2Mixer

US_PER_CALL, BYTES_PER_S = 10e-6, 3e12
# Calls that launch no kernel and write nothing: allocations and metadata-only reshapes (views are skipped too).
_NO_KERNEL = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "_unsafe_view", "lift_fresh"}


@dataclass
class OpCount:
    """ATen calls, the ops among them that launch a kernel, and the bytes those write (in-place: their target)."""

    calls: int = 0
    ops: int = 0
    bytes: int = 0

    @property
    def seconds(self) -> float:
        """The GPU time these ops need at least: host overhead or memory traffic, whichever is larger."""
        return max(self.calls * US_PER_CALL, self.bytes / BYTES_PER_S)

    def __add__(self, other: OpCount) -> OpCount:
        return OpCount(self.calls + other.calls, self.ops + other.ops, self.bytes + other.bytes)


class OpCounter(TorchDispatchMode):
    """Counts every ATen call made inside the block into `count`."""

    def __init__(self) -> None:
        super().__init__()
        self.count = OpCount()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.count.calls += 1
        if not func.is_view and func.overloadpacket.__name__ not in _NO_KERNEL:
            self.count.ops += 1
            self.count.bytes += sum(t.nbytes for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


def mixer_counts(tokens: int, flavor: str = "7b") -> dict[str, OpCount]:
    """One Mamba-2 layer of `flavor` (its width, mixer and dtype) over `tokens` video tokens, PyTorch path:
    "forward" (no grad: prefill), "forward (grad)", "backward" (of a given output gradient) and "training" =
    2 x forward (grad) + backward (gradient checkpointing runs the forward again before the backward)."""
    f, counts = get_flavor(flavor), {}
    with torch.device("meta"):
        layer = Mamba2Mixer(f.text["hidden_size"], **f.mixer, dtype=f.dtype)
        x = torch.empty(1, tokens, f.text["hidden_size"], dtype=f.dtype)
    for name, grad in (("forward", False), ("forward (grad)", True)):
        with torch.set_grad_enabled(grad), OpCounter() as c:
            out = layer(x.requires_grad_(grad))
        counts[name] = c.count
    with OpCounter() as c:
        out.backward(torch.empty_like(out))
    counts["backward"] = c.count
    counts["training"] = counts["forward (grad)"] + counts["forward (grad)"] + c.count
    return counts


def main(argv: list[str] | None = None) -> int:
    """`vamba bench --ops`: the table per pass and length."""
    p = argparse.ArgumentParser(prog="vamba bench --ops", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="7b", help="the flavor whose mixer is counted (default 7b)")
    p.add_argument("--tokens", default="16384,32768,65536", help="comma-separated video token counts")
    args = p.parse_args(argv)
    print(f"One Mamba-2 layer ({args.model}, PyTorch path; meta device with the GPU's settings). GB = 1e9 bytes "
          f"written; GPU time >= max(calls x 10 µs, bytes / 3 TB/s).\n\n| tokens | pass | calls | non-view ops "
          "| GB written | predicted ms |\n|---|---|---|---|---|---|")
    for n in map(int, args.tokens.split(",")):
        for name, c in mixer_counts(n, args.model).items():
            print(f"| {n:,} | {name} | {c.calls:,} | {c.ops:,} | {c.bytes / 1e9:,.1f} | {c.seconds * 1e3:,.1f} |")
    return 0
