"""What one Mamba-2 mixer layer asks of a GPU, counted on the meta device: `vamba bench --ops`.

A GPU's time for eager PyTorch code is bounded below by its host overhead (~10 µs per ATen call, however small the
op) and its memory traffic (bytes written / ~3 TB/s on an H100). Both are counted here without a GPU: a
`TorchDispatchMode` sees every ATen call of a mixer built on the meta device at the 7B shapes, and counts the calls,
the non-view ops among them (each ~ a kernel launch) and the bytes their outputs hold. The meta device takes the
accelerator's settings (SSD group bound, inference piece length), so the counts are those of the GPU's PyTorch path.
Counts are deterministic; tests/test_efficiency.py holds them under the targets of docs/efficiency.md ("Op counts").
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vamba.modeling.flavors import get_flavor
from vamba.modeling.mamba2 import Mamba2Mixer

US_PER_CALL, BYTES_PER_S = 10e-6, 3e12  # host time per ATen call and H100 memory bandwidth of the prediction
# Calls that launch no kernel and write nothing besides views: allocations and metadata-only reshapes.
_NO_KERNEL = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "_unsafe_view", "lift_fresh"}


@dataclass
class OpCount:
    """ATen calls, the ops among them that launch a kernel (not views, allocations or metadata-only reshapes) and
    the bytes those ops write (their outputs; in-place and out= ops count their target)."""

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
    """Counts every ATen call made inside the block into `count` (an `OpCount`)."""

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


def mixer_counts(tokens: int, flavor: str = "7b", **mixer: object) -> dict[str, OpCount]:
    """One Mamba-2 mixer layer of `flavor` (its dtype, d_model and mixer config; keywords override the mixer) over
    `tokens` video tokens on the meta device: "forward" (no grad, as prefill), "forward (grad)" and "backward" (of
    a random output gradient), and "training" = forward + checkpoint recompute + backward (2 x grad forward +
    backward, as gradient checkpointing runs it)."""
    f = get_flavor(flavor)
    with torch.device("meta"):
        layer = Mamba2Mixer(f.text["hidden_size"], **{**f.mixer, **mixer}, dtype=f.dtype)
        x = torch.empty(1, tokens, f.text["hidden_size"], dtype=f.dtype)
    counts = {}
    with torch.no_grad(), OpCounter() as c:
        layer(x)
    counts["forward"] = c.count
    x.requires_grad_(True)
    with OpCounter() as c:
        out = layer(x)
    counts["forward (grad)"] = c.count
    with OpCounter() as c:
        out.backward(torch.empty_like(out))
    counts["backward"] = c.count
    counts["training"] = counts["forward (grad)"] + counts["forward (grad)"] + c.count
    return counts


def main(argv: list[str] | None = None) -> int:
    """`vamba bench --ops`: the table per mixer layer and length."""
    p = argparse.ArgumentParser(prog="vamba bench --ops", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="7b", help="flavor whose mixer is counted (default 7b)")
    p.add_argument("--tokens", type=lambda t: [int(x) for x in t.split(",")], default=[16384, 32768, 65536],
                   help="comma-separated video token counts (default 16384,32768,65536)")
    args = p.parse_args(argv)
    print(f"One Mamba-2 mixer layer ({args.model}, PyTorch path, meta device with the GPU's settings); GB = 1e9 "
          f"bytes written; predicted GPU time >= max(calls x {US_PER_CALL * 1e6:g} µs, bytes / "
          f"{BYTES_PER_S / 1e12:g} TB/s):\n")
    print("| tokens | pass | calls | non-view ops | GB written | predicted ms |\n|---|---|---|---|---|---|")
    for n in args.tokens:
        for name, c in mixer_counts(n, args.model).items():
            print(f"| {n:,} | {name} | {c.calls:,} | {c.ops:,} | {c.bytes / 1e9:,.1f} | {c.seconds * 1e3:,.1f} |")
    return 0
