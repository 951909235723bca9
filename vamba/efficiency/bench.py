"""`vamba bench`: prefill FLOPs, memory and time of Vamba against Qwen2-VL of the same size (paper figures 3-4).

FLOPs are counted on the meta device, memory accounted and, unless --flops-only, measured with the time, one
fresh subprocess per point. Writes results.csv, flops.png, memory.png and time.png under --out and prints markdown
tables; points predicted to exceed --max-gb or --max-seconds are skipped. docs/efficiency.md says what each is.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

import torch

from ..modeling.errors import ArgParser
from .flops import prefill_flops
from .measure import measure_batch
from .memory import SYSTEMS, get_profile, memory_account

# The paper's figures 3-4 (A800 80GB, 7B, 640x360), read off its plots (DESIGN.md section 5): frames ->
# (Qwen2-VL, Vamba), None = out of memory.
PAPER_PREFILL_TFLOPS = {16: (51.7, 31.0), 64: (189.7, 100.0), 128: (372.4, 193.1), 256: (744.2, 379.3),
                        512: (None, 751.7), 1024: (None, 1489.7)}
PAPER_PREFILL_MEMORY_GB = {16: (19.2, 23.0), 64: (27.3, 25.0), 128: (38.4, 27.8), 256: (60.4, 33.4),
                           512: (None, 44.7), 1024: (None, 67.3)}
LABELS = {"qwen2vl": "Qwen2-VL (logits_to_keep=1)", "qwen2vl_stock": "Qwen2-VL stock (all logits)",
          "vamba": "Vamba", "vamba_stream": "Vamba streaming"}
COLORS = {"qwen2vl": "tab:blue", "qwen2vl_stock": "tab:cyan", "vamba": "tab:red", "vamba_stream": "tab:orange"}
FLOPS = {"whole": ("whole", "total"), "whole_causal": ("whole", "causal"), "lm": ("lm", "total"),
         "lm_causal": ("lm", "causal"), "vision": ("vision", "total"), "attention": ("whole", "attention"),
         "scan": ("whole", "scan"), "paper_convention": ("whole", "paper")}


def bench_rows(model: str, frames: list[int], height: int | None = None, width: int | None = None,
               text_tokens: int | None = None, chunk_frames: int = 32) -> list[dict[str, Any]]:
    """One CSV record per (system, frames): exact FLOP counts and the memory account (GB)."""
    profile = get_profile(model)
    flops = {(p.system, p.frames): p for p in prefill_flops(profile, frames, height, width, text_tokens)}
    rows = []
    for system in SYSTEMS:
        for f in frames:
            a = memory_account(profile, system, f, height, width, chunk_frames, text_tokens)
            p = flops.get((system, f))
            row = {"profile": model, "system": system, "frames": f, "visual_tokens": a.visual_tokens,
                   "height": height or profile.height, "width": width or profile.width,
                   "chunk_frames": chunk_frames if system == "vamba_stream" else "",
                   **{f"flops_{k}": getattr(getattr(p, part), v) if p else "" for k, (part, v) in FLOPS.items()},
                   **{f"account_{k}_gb": round(getattr(a, f"{k}_gb"), 6)
                      for k in ("peak", "total", "weights", "kv_cache", "logits", "activations")},
                   "account_peak_phase": a.peak_phase, "account_total_gb_logits_upcast": round(memory_account(
                       profile, system, f, height, width, text_tokens=text_tokens, logits_upcast=True).total_gb, 6)
                   if system == "qwen2vl_stock" else ""}
            rows.append(row | {k: "" for k in ("time_s", "spread_s", "reps", "peak_gb", "method", "train_time_s",
                                               "train_spread_s", "train_reps", "train_peak_gb")}
                        | {"status": "not measured", "train_status": "not measured"})
    return rows


def _limit(row: dict, last: dict | None, args, train: bool) -> str | None:
    """Why `row` is skipped: memory over --max-gb (prefill: accounted; training: the last measured point scaled
    by frames) or time over --max-seconds (the last measured time scaled by FLOPs, attention included)."""
    p = "train_" if train else ""
    if train:  # weights and their gradients, and the activations growing with frames
        gb = 2 * row["account_weights_gb"] + (last["train_peak_gb"] * row["frames"] / last["frames"] if last else 0)
    else:
        gb = row["account_total_gb"]
    if gb > args.max_gb:
        return f"{gb:.1f} GB predicted > --max-gb {args.max_gb:g}"
    if last and (s := last[f"{p}time_s"] * (row["flops_whole"] or 1) / (last["flops_whole"] or 1)) > args.max_seconds:
        return f"{s:.0f} s predicted > --max-seconds {args.max_seconds:g}"
    return None


def measure_rows(rows: list[dict], args, device: str, train: bool) -> None:
    """`--reps` rounds, each point once per round in its own fresh subprocess (built, warmed up at the same frame
    count, timed), systems interleaved so that load changes reach them alike: median time, spread (max - min),
    median peak. A point skipped or failed skips the system's larger ones. --batch: a round in one subprocess."""
    p = "train_" if train else ""
    systems = ("qwen2vl", "vamba") if train else ("qwen2vl",) + ("qwen2vl_stock",) * args.stock + (
        "vamba", "vamba_stream")
    todo = sorted((r for r in rows if r["system"] in systems), key=lambda r: (r["frames"], systems.index(r["system"])))
    blocked, last, got = {}, {}, {id(r): [] for r in todo}  # blocked: system -> its smallest point not measured
    for rep in range(args.reps):
        batch = []
        for row in todo:
            system, frames = row["system"], row["frames"]
            if frames >= blocked.get(system, frames + 1):
                if not rep and not row[f"{p}status"].startswith("failed"):
                    row[f"{p}status"] = "skipped (a smaller point failed or was skipped)"
                continue
            reason = None if rep else _limit(row, last.get(system), args, train)
            if reason:
                row[f"{p}status"] = "skipped (limit)"
                blocked[system] = frames
                print(f"{p}{system} @ {frames} frames: skipped ({reason})", flush=True)
                continue
            spec = {k: row[k] for k in ("profile", "system", "frames", "height", "width")} | {
                "chunk_frames": args.stream_chunk, "text_tokens": args.text_tokens, "device": device, "train": train,
                "threads": args.threads}
            if args.batch:
                batch.append((row, spec))
                continue
            print(f"{p}{system} @ {frames} frames, round {rep + 1}/{args.reps} ...", flush=True)
            if not _record(row, measure_batch([spec], 3 * args.max_seconds + 120)[0], p, got[id(row)]):
                blocked[system] = frames
            last[system] = row
        results = measure_batch([s for _, s in batch], (3 * args.max_seconds + 60) * len(batch) + 120) if batch else []
        for (row, _), res in zip(batch, results):
            _record(row, res, p, got[id(row)])


def _record(row: dict, res: dict, p: str, got: list[dict]) -> bool:
    """Add one round's result `res` to `row` (median and spread over the rounds so far); False if it failed."""
    if res["status"] != "ok":
        row[f"{p}status"] = res["status"]
        print(f"   {res['status']}: {res.get('error', '')[-300:]}", flush=True)
        return False
    got.append(res)
    seconds = [g["seconds"] for g in got]
    row |= {f"{p}status": "ok", f"{p}time_s": round(statistics.median(seconds), 3), f"{p}spread_s": round(
        max(seconds) - min(seconds), 3), f"{p}reps": len(got), f"{p}peak_gb": round(statistics.median(
            g["peak_gb"] for g in got), 6), "method": row["method"] or res["method"]}
    print(f"   ok: {res['seconds']:.2f} s, peak +{res['peak_gb']:.4g} GB", flush=True)
    return True


def _markdown(headers: list[str], body: list[list]) -> str:
    return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                     + ["| " + " | ".join(map(str, r)) + " |" for r in body])


def tables(rows: list[dict], paper: bool) -> str:
    """Markdown: FLOPs (with attention, causal-effective, the paper's convention beside the paper's values at 7B)
    and memory (account beside measured peak increase and time)."""
    by = {(r["system"], r["frames"]): r for r in rows}

    def tf(r, key):
        return f"{r[f'flops_{key}'] / 1e12:.4g}"

    def ratio(key, base="qwen2vl"):
        return f"{by[('vamba', f)][f'flops_{key}'] / by[(base, f)][f'flops_{key}']:.3f}"

    flops = []
    for f in sorted({r["frames"] for r in rows}):
        q, s, v = by[("qwen2vl", f)], by[("qwen2vl_stock", f)], by[("vamba", f)]
        flops.append([f, q["visual_tokens"], tf(q, "whole"), tf(v, "whole"), ratio("whole"), ratio("whole_causal"),
                      ratio("lm"), ratio("lm_causal"), tf(s, "paper_convention"), tf(v, "paper_convention"),
                      ratio("paper_convention", "qwen2vl_stock")]
                     + [" / ".join("OOM" if x is None else str(x) for x in PAPER_PREFILL_TFLOPS.get(f, "-"))] * paper)
    memory = [[LABELS[r["system"]], r["frames"]] + [f"{r[k]:.4g}" if isinstance(r[k], float) else r[k] or "-" for k in (
        "account_total_gb", "account_total_gb_logits_upcast", "account_kv_cache_gb", "account_activations_gb",
        "account_peak_phase", "account_peak_gb", "peak_gb", "time_s", "spread_s", "reps", "status", "train_time_s",
        "train_spread_s", "train_peak_gb")] for r in rows]
    return "\n\n".join([
        "Prefill TFLOPs; 'causal' counts causal attention as computed; the paper's convention leaves out attention "
        "and the fused Mamba scan; ratios are Vamba / Qwen2-VL:",
        _markdown(["frames", "visual tokens", "Qwen2-VL", "Vamba", "ratio", "ratio causal", "LM ratio",
                   "LM ratio causal", "paper conv. Qwen2-VL stock", "paper conv. Vamba", "ratio"]
                  + ["paper's figure Qwen / Vamba"] * paper, flops),
        "Memory (GB = 1e9 bytes; account total = weights + inputs + peak; measured = peak increase) and time "
        "(median over rounds, spread = max - min; each a fresh process warmed up at the same frame count):",
        _markdown(["system", "frames", "account total", "... w/ fp32 logits", "KV cache", "activations at peak",
                   "peak moment", "account peak", "measured peak", "prefill s", "spread s", "rounds", "status",
                   "train step s", "train spread s", "train peak"], memory)])


def plot(rows: list[dict], path: Path, ylabel: str, series: list[tuple[str, str, str]],
         paper: dict | None = None) -> bool:
    """One log-log figure of `series` (CSV column, line style, label suffix) per system, the paper's points
    beside; False (nothing drawn) when no row has a value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for system in SYSTEMS:
        for key, style, what in series:
            pts = sorted((r["frames"], r[key] * (1e-12 if key.startswith("flops") else 1)) for r in rows
                         if r["system"] == system and r[key] not in ("", None))
            if pts:
                ax.plot(*zip(*pts), style, color=COLORS[system], label=LABELS[system] + what)
    drawn = bool(ax.lines)
    if drawn:
        for i, system in enumerate(("qwen2vl_stock", "vamba")) if paper else ():
            ax.plot(*zip(*[(f, v[i]) for f, v in paper.items() if v[i]]), "*", color=COLORS[system], ms=10,
                    label=f"paper: {LABELS[system]}")
        ax.set_xscale("log", base=2)
        ax.set(yscale="log", xlabel="frames", ylabel=ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


def build_parser() -> ArgParser:
    p = ArgParser(prog="vamba bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="small", choices=("7b", "small", "tiny", "quickstart"),
                   help="a flavor (vamba.modeling.flavors); 7b: FLOPs and the account, measured only on a GPU")
    p.add_argument("--frames", type=lambda t: sorted({int(x) for x in t.split(",")}), default=[16, 64, 256],
                   help="comma-separated frame counts, multiples of the temporal patch size")
    p.add_argument("--flops-only", action="store_true", help="count FLOPs and account memory; measure nothing")
    p.add_argument("--height", type=int, help="frame height before the resize (default: the flavor's, 360)")
    p.add_argument("--width", type=int, help="frame width before the resize (default: the flavor's, 640)")
    p.add_argument("--text-tokens", type=int, help="prompt tokens besides the video (default: the flavor's)")
    p.add_argument("--stream-chunk", type=int, default=32, help="frames per chunk of the streaming prefill")
    p.add_argument("--out", type=Path, help="output directory (default outputs/bench/<model>)")
    p.add_argument("--train-step", action="store_true", help="also measure one training step (forward + backward)")
    p.add_argument("--stock", action="store_true", help="also measure Qwen2-VL with all logits (always accounted)")
    p.add_argument("--max-seconds", type=float, default=300.0, help="skip points predicted to take longer")
    p.add_argument("--max-gb", type=float, default=16.0, help="skip points predicted to need more memory")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, help="CPU threads per measurement (default torch's)")
    p.add_argument("--reps", type=int, default=3, help="rounds of measurements, interleaved (default 3)")
    p.add_argument("--batch", action="store_true",
                   help="each round in one subprocess (quick smoke runs; times then depend on what ran before)")
    return p


def main(argv: list[str] | None = None) -> int:
    """`vamba bench [options]`; returns an exit code."""
    args = build_parser().parse_args(argv)
    out = args.out or Path("outputs") / "bench" / args.model
    out.mkdir(parents=True, exist_ok=True)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    rows = bench_rows(args.model, args.frames, args.height, args.width, args.text_tokens, args.stream_chunk)
    if not args.flops_only:
        measure_rows(rows, args, device, train=False)
        if args.train_step:
            measure_rows(rows, args, device, train=True)
    print("\n" + tables(rows, paper=args.model == "7b"))
    with (out / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    measured = any(r["peak_gb"] != "" for r in rows)
    memory = ([("account_peak_gb", "--", ": account"), ("peak_gb", "o-", ": measured")] if measured else
              [("account_total_gb", "--", ": account"), ("account_total_gb_logits_upcast", ":", ", fp32 logits copy")])
    figures = {"flops.png": ("prefill TFLOPs", [("flops_whole", "o-", ""), ("flops_whole_causal", "^:", ", causal"),
                                                ("flops_paper_convention", "s--", ", paper convention")],
                             PAPER_PREFILL_TFLOPS),
               "memory.png": ("prefill peak increase (GB)" if measured else "prefill memory: weights + inputs + peak "
                              "(GB)", memory, None if measured else PAPER_PREFILL_MEMORY_GB),
               "time.png": ("seconds", [("time_s", "o-", ": prefill"), ("train_time_s", "s--", ": train step")], None)}
    drawn = [name for name, (ylabel, series, paper) in figures.items() if plot(
        rows, out / name, ylabel, series, paper if args.model == "7b" else None)]
    print(f"\nwrote results.csv, {', '.join(drawn)} under {out}")
    return 0
