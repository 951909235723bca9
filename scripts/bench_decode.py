"""Benchmark: N frames sampled uniformly from a 10-minute video, per decoder (not a test; prints one table).

The clip is made here (cached under outputs/bench_decode/): 18,000 frames of 640x360 h264 (libx264 through PyAV)
at 30 fps with a keyframe every 250 frames, each frame carrying its index in binary blocks
(`vamba.data.mp4.write_synthetic_video`), so every method's output is checked frame by frame. Each cell runs in
a fresh subprocess (no warm caches, honest peak memory) and times open + decode of the same indices (segment
middles, `vamba.data.frames.sample_indices`) with one decoder thread.

Methods (those not installed are listed as such):
- ``pyav-planner``: the project's reader, ``load_video(path, FrameSpec(count=N), backend="pyav", resize=False)``:
  our seek planner on PyAV (`vamba.data.decode`), the default backend;
- ``decord``: ``decord.VideoReader(path).get_batch(indices)`` (the original release's loader);
- ``torchcodec``: ``VideoDecoder(path, seek_mode="exact").get_frames_at(indices)``, and
  ``torchcodec-approx`` with ``seek_mode="approximate"`` (no scan of the file at open);
- ``transformers``: ``transformers.video_utils.load_video(path, backend="pyav", sample_indices_fn=...)``.

Columns: median wall and CPU seconds of the open + decode call over the repeats (run interleaved, so a busy spell
of the machine hits every method), peak RSS increase over the process's RSS before the call (median), and whether
every returned frame is the requested one. Decoding is single-threaded, so on an idle machine CPU ~ wall; on a
shared one the CPU column is the steadier of the two.

    python scripts/bench_decode.py                 # 10-minute clip (the first run encodes it, ~2 min)
    python scripts/bench_decode.py --quick         # 1-minute clip
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("pyav-planner", "decord", "torchcodec", "torchcodec-approx", "transformers")
WIDTH, HEIGHT, FPS, GOP = 640, 360, 30, 250
NEEDS = {"decord": "decord", "torchcodec": "torchcodec.decoders", "torchcodec-approx": "torchcodec.decoders",
         "transformers": "transformers.video_utils"}


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _decode(method: str, path: str, n: int, threads: int):
    """(frames (N, H, W, 3) uint8 array, indices asked for) for one method; opens the file itself."""
    from vamba.data.frames import FrameSpec, sample_indices
    from vamba.data.video import load_video

    if method == "pyav-planner":
        v = load_video(path, FrameSpec(count=n), backend="pyav", resize=False, threads=threads)
        return v.frames, v.indices
    if method == "decord":
        import decord

        vr = decord.VideoReader(path, num_threads=threads)
        idx = sample_indices(len(vr), vr.get_avg_fps(), "uniform", num_frames=n)
        return vr.get_batch(idx.tolist()).asnumpy(), idx
    if method.startswith("torchcodec"):
        from torchcodec.decoders import VideoDecoder

        mode = "approximate" if method.endswith("approx") else "exact"
        dec = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=threads, seek_mode=mode)
        idx = sample_indices(dec.metadata.num_frames, dec.metadata.average_fps, "uniform", num_frames=n)
        return dec.get_frames_at(indices=idx.tolist()).data.numpy(), idx
    if method == "transformers":
        from transformers.video_utils import load_video as hf_load_video

        chosen = {}

        def pick(metadata, **_):  # its reader asks for indices once it has read the header
            chosen["idx"] = sample_indices(metadata.total_num_frames, metadata.fps, "uniform", num_frames=n)
            return chosen["idx"]

        frames, _ = hf_load_video(path, backend="pyav", sample_indices_fn=pick)
        return frames, chosen["idx"]
    raise ValueError(method)


def worker(method: str, path: str, n: int, threads: int) -> dict:
    """One measurement in this fresh process: timings, memory and the frame-identity check."""
    import numpy as np

    from vamba.data.mp4 import read_frame_ids

    _decode(method, path, 2, threads)  # imports and one-time library set-up stay outside the timed call
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM so the peak covers the timed call only
        f.write("5")
    rss0 = _rss_mb("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    frames, idx = _decode(method, path, n, threads)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _rss_mb("VmHWM") - rss0
    ids = read_frame_ids(np.asarray(frames))
    return {"method": method, "n": n, "wall_s": wall, "cpu_s": cpu, "peak_mb": peak,
            "ok": bool(len(ids) == len(idx) and np.array_equal(ids, idx))}


def make_video(path: Path, seconds: int) -> None:
    from vamba.data.mp4 import write_synthetic_video

    tmp = path.with_suffix(".tmp.mp4")
    print(f"[bench] encoding {seconds * FPS} frames {WIDTH}x{HEIGHT} @ {FPS} fps, GOP {GOP} -> {path}", flush=True)
    t0 = time.time()
    write_synthetic_video(tmp, seconds * FPS, width=WIDTH, height=HEIGHT, fps=FPS, gop=GOP, codec="libx264")
    os.replace(tmp, path)  # only a complete file gets the cached name
    print(f"[bench] encoded in {time.time() - t0:.0f} s, {path.stat().st_size / 2**20:.1f} MB", flush=True)


def available(method: str) -> bool:
    probe = subprocess.run([sys.executable, "-c", f"import {NEEDS.get(method, 'av')}"], capture_output=True, env=_env())
    return probe.returncode == 0


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def run_once(method: str, video: Path, n: int, threads: int) -> dict | None:
    """One fresh-process run; None (and the error printed) when it fails."""
    cmd = [sys.executable, __file__, "--worker", method, str(video), str(n), str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=1800)
    if proc.returncode != 0:
        print(f"[bench] {method} N={n} failed:\n{proc.stderr[-2000:]}", flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_row(runs: list[dict]) -> dict:
    med = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "cpu_s", "peak_mb")}
    return {**runs[0], **med, "ok": all(r["ok"] for r in runs)}


def table(rows: list[dict], missing: dict[str, str]) -> str:
    lines = ["| method | frames | wall s | CPU s | peak RSS + MB | frames right |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['n']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_mb']:.0f} | "
              f"{'yes' if r['ok'] else 'NO'} |" for r in rows]
    lines += [f"| {m} | - | - | - | - | {why} |" for m, why in missing.items()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1-minute clip instead of 10 minutes")
    ap.add_argument("--threads", type=int, default=1, help="decoder threads (default 1, as in data-loader workers)")
    ap.add_argument("--frames", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--repeats", type=int, default=3, help="fresh-process runs per cell; the table shows medians")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench_decode"))
    ap.add_argument("--worker", nargs=4, metavar=("METHOD", "PATH", "N", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        m, p, n, t = args.worker
        print(json.dumps(worker(m, p, int(n), int(t))))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds = 60 if args.quick else 600
    video = out / f"synthetic_{seconds}s_{WIDTH}x{HEIGHT}_{FPS}fps_gop{GOP}.mp4"
    if not video.exists():
        make_video(video, seconds)
    missing = {m: "not installed / does not import here" for m in args.methods if not available(m)}
    methods = [m for m in args.methods if m not in missing]
    runs: dict[tuple[str, int], list[dict]] = {(m, n): [] for n in args.frames for m in methods}
    for _ in range(args.repeats):  # interleaved (A B C A B C ...), so a busy spell of the machine hits every method
        for n in args.frames:
            for m in methods:
                r = run_once(m, video, n, args.threads)
                if r is not None:
                    runs[(m, n)].append(r)
                    print(f"[bench] {m:>17} N={n:<5} {r['wall_s']:7.2f} s wall {r['cpu_s']:7.2f} s cpu "
                          f"peak +{r['peak_mb']:6.0f} MB  frames ok: {r['ok']}", flush=True)
    rows = [median_row(rs) for rs in runs.values() if rs]
    text = (f"{video.name}, threads={args.threads}, median of {args.repeats}, load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n\n{table(rows, missing)}")
    print("\n" + text)
    (out / f"results_{seconds}s_t{args.threads}.md").write_text(text + "\n")
    if not all(r["ok"] for r in rows):
        sys.exit("some method returned wrong frames")


if __name__ == "__main__":
    main()
