"""Benchmark: our pure-PyTorch Mamba-2 path vs transformers' Mamba2Mixer torch path, CPU, by sequence length.

Prints tokens/s and the peak resident-memory increase of one forward pass (inference mode) for each length, and
tokens per CPU-second (process CPU time, all threads): on a shared machine wall time depends on the other load.
Each measurement runs in a fresh subprocess so peaks do not leak between runs; the peak is read from the
kernel's VmHWM after resetting it (/proc/self/clear_refs), so it covers the forward pass only.

    python scripts/bench_ssd.py                      # whole mixers (in_proj, conv, scan, norm, out_proj)
    python scripts/bench_ssd.py --what scan          # the scans alone (ssd_chunk_scan vs mamba2_chunk_scan)
    python scripts/bench_ssd.py --lengths 1024 4096  # fewer lengths

Sizes default to d_model 256 (d_inner 512, 8 heads of 64), d_state 128, chunk 256, batch 1. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

IMPLS = ("ours", "transformers")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _build(impl: str, what: str, args: argparse.Namespace, seqlen: int):
    """Returns a zero-argument callable running one forward pass, with its inputs already allocated."""
    import torch

    torch.manual_seed(0)
    nheads = args.expand * args.d_model // args.headdim
    if what == "scan":
        x = torch.randn(args.batch, seqlen, nheads, args.headdim)
        dt = torch.randn(args.batch, seqlen, nheads)
        A = -torch.empty(nheads).uniform_(1, 16)
        B = torch.randn(args.batch, seqlen, 1, args.d_state)
        C = torch.randn(args.batch, seqlen, 1, args.d_state)
        D, dt_bias = torch.ones(nheads), torch.randn(nheads) - 4
        if impl == "ours":
            from vamba.modeling.ssd import ssd_chunk_scan as scan
        else:
            from transformers.models.mamba2.modeling_mamba2 import mamba2_chunk_scan as scan
        return lambda: scan(x, dt, A, B, C, args.chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True)

    if impl == "ours":
        from vamba.modeling.mamba2 import Mamba2Mixer

        mixer = Mamba2Mixer(
            args.d_model, d_state=args.d_state, expand=args.expand, headdim=args.headdim, chunk_size=args.chunk_size
        )
    else:
        from transformers import Mamba2Config
        from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer as HFMamba2Mixer

        config = Mamba2Config(
            hidden_size=args.d_model, num_heads=nheads, head_dim=args.headdim, state_size=args.d_state, n_groups=1,
            chunk_size=args.chunk_size, expand=args.expand, num_hidden_layers=1,
        )
        mixer = HFMamba2Mixer(config, layer_idx=0)
    mixer.eval()
    hidden = torch.randn(args.batch, seqlen, args.d_model)
    return lambda: mixer(hidden)


def _worker(impl: str, what: str, seqlen: int, args: argparse.Namespace) -> dict:
    import gc
    import logging

    import torch

    logging.disable(logging.WARNING)  # transformers warns once that it falls back to torch code
    if args.threads:
        torch.set_num_threads(args.threads)
    run = _build(impl, what, args, seqlen)
    gc.collect()
    with torch.inference_mode():
        run()  # warm-up: one-time allocations and lazy imports stay out of the measurement
        gc.collect()
        base = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM (peak RSS) to the current RSS
        times, cpu = [], []
        t_start = time.perf_counter()
        while len(times) < args.min_reps or (time.perf_counter() - t_start < args.min_seconds and len(times) < 50):
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        peak = _status_kib("VmHWM")
    best = min(times)
    return {
        "impl": impl, "seqlen": seqlen, "tokens_per_s": args.batch * seqlen / best, "seconds": best,
        "tokens_per_cpu_s": args.batch * seqlen / min(cpu), "load": os.getloadavg()[0],
        "reps": len(times), "peak_mib": (peak - base) / 1024, "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--what", choices=("mixer", "scan"), default="mixer")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--d-state", type=int, default=128)
    parser.add_argument("--expand", type=int, default=2)
    parser.add_argument("--headdim", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--min-reps", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--timeout", type=float, default=900.0, help="per measurement, seconds")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "SEQLEN"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(_worker(args.worker[0], args.what, int(args.worker[1]), args)))
        return

    forwarded = sys.argv[1:]
    results: dict[tuple[str, int], dict | str] = {}
    for seqlen in args.lengths:
        for impl in args.impls:
            cmd = [sys.executable, __file__, *forwarded, "--worker", impl, str(seqlen)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                if proc.returncode != 0:
                    results[impl, seqlen] = f"failed (rc {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
                else:
                    results[impl, seqlen] = json.loads(proc.stdout.strip().splitlines()[-1])
            except subprocess.TimeoutExpired:
                results[impl, seqlen] = f"timeout > {args.timeout:.0f}s"
            res = results[impl, seqlen]
            print(f"  {impl:>12} L={seqlen:>6}: {res if isinstance(res, str) else _fmt(res)}", file=sys.stderr)

    nheads = args.expand * args.d_model // args.headdim
    print(
        f"\n{args.what}: d_model={args.d_model} heads={nheads} headdim={args.headdim} d_state={args.d_state} "
        f"chunk={args.chunk_size} batch={args.batch}, CPU, {_threads(results)} threads, inference mode, "
        f"best of >= {args.min_reps} runs"
    )
    header = f"| {'L':>6} |" + "".join(
        f" {impl + ' tok/s':>18} | {impl + ' tok/CPU-s':>20} | {impl + ' peak MiB':>21} |" for impl in args.impls)
    print(header)
    print("|" + "---|" * (1 + 3 * len(args.impls)))
    for seqlen in args.lengths:
        row = f"| {seqlen:>6} |"
        for impl in args.impls:
            res = results[impl, seqlen]
            if isinstance(res, str):
                row += f" {'-':>18} | {'-':>20} | {res[:21]:>21} |"
            else:
                row += (f" {res['tokens_per_s']:>18,.0f} | {res['tokens_per_cpu_s']:>20,.0f} |"
                        f" {res['peak_mib']:>21,.1f} |")
        print(row)
    for impl in args.impls:
        ref = results.get((impl, 4096))
        if isinstance(ref, dict):
            ratios = [
                f"L={n}: {results[impl, n]['tokens_per_s'] / ref['tokens_per_s']:.2f}"
                for n in args.lengths if isinstance(results[impl, n], dict)
            ]
            print(f"{impl}: throughput relative to L=4096: " + ", ".join(ratios))


def _threads(results: dict) -> str:
    return ",".join(sorted({str(r["threads"]) for r in results.values() if isinstance(r, dict)})) or "?"


def _fmt(res: dict) -> str:
    return (
        f"{res['tokens_per_s']:,.0f} tok/s, {res['tokens_per_cpu_s']:,.0f} tok/CPU-s, peak +{res['peak_mib']:,.1f} MiB "
        f"({res['reps']} reps, {res['threads']} threads, load {res['load']:.1f})"
    )


if __name__ == "__main__":
    main()
