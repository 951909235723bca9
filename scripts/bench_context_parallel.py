#!/usr/bin/env python3
"""Measure per-rank peak memory of one training step under context parallel, W = 1, 2, 4 (CPU, gloo, torchrun).

One sample of the `small` profile (the 7B visual geometry at width 512), gradient checkpointing on; each rank
measures its peak RSS increase over one forward + backward (`vamba.efficiency.measure.peak_memory`). The video part
should shrink about as 1/W while the replicated text part and the weights stay.

    python scripts/bench_context_parallel.py --frames 64        # prints a table; JSON in outputs/bench
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from vamba import VambaForConditionalGeneration
from vamba.efficiency.measure import build_inputs, peak_memory
from vamba.efficiency.memory import GB, get_profile, profile_geometry
from vamba.parallel import ContextParallel, launch


def worker(profile_name: str, frames: int, out: str) -> None:
    launch.init("gloo")
    profile = get_profile(profile_name)
    torch.manual_seed(0)
    model = VambaForConditionalGeneration(profile.vamba).train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    inputs = build_inputs(profile, "vamba", profile_geometry(profile, frames), profile.text_tokens, "cpu",
                          torch.float32)
    batch = {**inputs, "labels": inputs["input_ids"].clone()}
    world = dist.get_world_size()
    if world > 1:
        batch = ContextParallel(world).shard(batch, model.config)
    with peak_memory("cpu") as peak:
        model(**batch, use_cache=False).loss.backward()
    peaks = [None] * world
    dist.all_gather_object(peaks, peak["peak_bytes"])
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps({"frames": frames, "cp": world, "peak_bytes": peaks}))


def run_world(profile_name: str, frames: int, w: int, out: Path) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={w}", "--master_addr=127.0.0.1",
           f"--master_port={port}", __file__, "--worker", profile_name, str(frames), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"W={w} failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--profile", default="small")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--sizes", default="1,2,4")
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args()
    if args.worker:
        try:
            worker(args.worker[0], int(args.worker[1]), args.worker[2])
        except BaseException:
            launch.abort(1)
        launch.finish()
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [run_world(args.profile, args.frames, int(w), out / f"cp_memory_{w}.json") for w in args.sizes.split(",")]
    tokens = profile_geometry(get_profile(args.profile), args.frames).tokens
    print(f"{args.profile}, {args.frames} frames of 640x360 = {tokens:,} visual tokens, one training step per rank\n")
    print("| W | local visual tokens | peak per rank (GB, max over ranks) | vs W=1 |\n|---|---|---|---|")
    base = None
    for r in rows:
        peak = max(r["peak_bytes"]) / GB
        base = base or peak
        print(f"| {r['cp']} | {-(-tokens // r['cp']):,} | {peak:.3f} | {peak / base:.2f} |")
    if len(rows) >= 3 and [r["cp"] for r in rows[:2]] == [1, 2]:
        p1, p2 = (max(r["peak_bytes"]) / GB for r in rows[:2])
        video, rest = 2 * (p1 - p2), 2 * p2 - p1  # peak = rest + video / W, from W = 1 and 2
        print(f"\npeak = {rest:.3f} + {video:.3f} / W GB (replicated part + video part, from W = 1, 2); predicted "
              + ", ".join(f"W={r['cp']}: {rest + video / r['cp']:.3f}" for r in rows[2:]))
    (out / "context_parallel_measured.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
