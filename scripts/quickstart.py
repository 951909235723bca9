"""The whole Vamba recipe at toy scale on CPU, in one command (`scripts/quickstart.sh`).

1. synthetic long-video data (`vamba.data.synthetic`, the task in configs/quickstart.yaml);
2. a tiny Qwen2-VL trained from scratch on it, the stand-in for the pretrained base (experiment=quickstart_base);
3. `vamba convert` to Vamba (cross-attention copied from self-attention, fresh Mamba-2 mixers, alpha 0.5);
4. stage 1 (new layers only), then stage 2 (all weights) (experiment=quickstart_stage1 / quickstart_stage2);
5. `vamba eval` of the tiny Qwen2-VL and the tiny Vamba at several frame counts; and, where Vamba's savings are
   real, `vamba bench`: the ~0.2B `small` flavor timed on this CPU, and the 7B's FLOPs and memory account;
6. two tables (accuracy with chance named; prefill costs) and a PNG plot under --out.

The tiny models are for accuracy only: at width 128 the vision tower and fixed per-layer costs dominate, so their
prefill says nothing about Vamba's (docs/efficiency.md).

Every step reuses its output if it is already there, so re-running is cheap.

    python scripts/quickstart.py [--small] [--out DIR] [hydra overrides of configs/quickstart.yaml]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

from omegaconf import OmegaConf

from vamba.config import compose

CHANCE = 25.0
MODELS = ("Qwen2-VL (tiny)", "Vamba (tiny)")


def _banner(step: str) -> float:
    print(f"\n=== {step} ===", flush=True)
    return time.perf_counter()


def _train(experiment: str, out: Path, extra: list[str]) -> Path:
    """Run a training experiment (reused when its export exists); returns the export directory."""
    from vamba.train.trainer import run

    cfg = compose("train", [f"experiment={experiment}", f"output_dir={out}", *extra])
    final = out / "final"
    if (final / "config.json").is_file():
        print(f"reusing {final}")
        return final
    return run(cfg)


def run_steps(qs, out: Path) -> tuple[list[dict], dict[str, float]]:
    """Steps 1-5; returns the accuracy rows and the wall time of each step."""
    from vamba.data.synthetic import SyntheticConfig, generate
    from vamba.efficiency.bench import main as bench_main
    from vamba.evals.runner import run_eval
    from vamba.modeling.convert import convert_checkpoint
    from vamba.modeling.flavors import get_flavor

    timings: dict[str, float] = {}
    t = _banner("1/6 synthetic data")
    data = out / "data"
    generate(data, SyntheticConfig(**OmegaConf.to_container(qs.data)))
    os.environ["VAMBA_SYNTHETIC"] = str(data)  # the data root of the experiment configs
    timings["data"] = time.perf_counter() - t

    t = _banner("2/6 tiny Qwen2-VL from scratch (the stand-in for the pretrained base)")
    extra = list(qs.train_overrides)
    base = _train("quickstart_base", out / "qwen2vl", extra)
    timings["base"] = time.perf_counter() - t

    t = _banner("3/6 convert to Vamba")
    init = out / "vamba-init"
    if not (init / "config.json").is_file():  # also carries the base's tokenizer and processor files over
        convert_checkpoint(base, init, mixer_config=get_flavor(qs.flavor).mixer)
    timings["convert"] = time.perf_counter() - t

    t = _banner("4/6 stage 1 (new layers) and stage 2 (all weights)")
    stage1 = _train("quickstart_stage1", out / "vamba-stage1", [f"model.path={init}", *extra])
    stage2 = _train("quickstart_stage2", out / "vamba-stage2", [f"model.path={stage1}", *extra])
    timings["train"] = time.perf_counter() - t

    t = _banner("5/6 evaluate both models and profile them")
    most = max(qs.eval_frames)
    runs = [(MODELS[0], base, "qwen2_vl", qs.eval_frames, "qwen2vl"), (MODELS[1], stage2, "vamba", qs.eval_frames,
            "vamba"), ("Vamba, converted (no training)", init, "vamba", [most], "vamba-init"),
            ("Vamba after stage 1", stage1, "vamba", [most], "vamba-stage1")]
    results = []
    for name, path, kind, frame_counts, tag in runs:
        for frames in frame_counts:
            summary = run_eval(compose("eval", [
                "benchmark=synthetic", f"model.path={path}", f"model.type={kind}", f"data_dir={data}",
                f"frames.count={frames}", f"output_dir={out / 'eval' / f'{tag}-f{frames}'}", *qs.eval_overrides]))
            results.append({"model": name, "frames": frames, "accuracy": summary["headline"],
                            "questions": summary["overall"]["total"]})
    eff = qs.efficiency
    for model, frames, flags in (("small", eff.measured_frames, list(eff.measured_flags)), ("7b", eff.accounted_frames,
                                                                                ["--flops-only"])):
        done = out / "bench" / model / "results.csv"
        have = {int(r["frames"]) for r in csv.DictReader(done.open())} if done.is_file() else set()
        if not set(frames) <= have:  # reused when already there
            bench_main(["--model", model, "--frames", ",".join(map(str, frames)), "--out", str(done.parent), *flags])
    timings["eval+bench"] = time.perf_counter() - t
    return results, timings


def bench_rows(out: Path) -> list[dict]:
    """Prefill costs from `vamba bench`: the small flavor measured here, the 7B counted and accounted."""
    rows = []
    for model in ("small", "7b"):
        path = out / "bench" / model / "results.csv"
        for r in csv.DictReader(path.open()) if path.exists() else ():
            num = {k: float(r[k]) if r[k] else None for k in ("time_s", "peak_gb", "account_peak_gb",
                                                                "account_total_gb", "flops_whole")}
            rows.append({"flavor": model, "system": r["system"], "frames": int(r["frames"]), "status": r["status"],
                         "visual_tokens": int(r["visual_tokens"]), **num})
    return rows


def summary_table(results: list[dict], costs: list[dict], timings: dict[str, float], total: float,
                  video_frames: int) -> str:
    """Two tables: accuracy of the tiny models per frame count; prefill costs where Vamba's savings show."""
    acc = {(r["model"], r["frames"]): r["accuracy"] for r in results}
    cost = {(c["flavor"], c["system"], c["frames"]): c for c in costs}
    fmt = lambda x, spec: "–" if x is None else format(x, spec)  # noqa: E731
    lines = [
        f"## Tiny Qwen2-VL vs tiny Vamba on the synthetic long-video benchmark (4 options: chance = {CHANCE:.0f}%)",
        "", f"Accuracy on {max(r['questions'] for r in results)} questions about {video_frames}-frame videos.", "",
        "| model | frames | accuracy (%) |", "|---|---:|---:|"]
    lines += [f"| {m} | {f} | {a:.1f} |" for (m, f), a in sorted(acc.items()) if m in MODELS]
    most = max(f for m, f in acc if m == MODELS[1])
    steps = ("Vamba, converted (no training)", "Vamba after stage 1", MODELS[1])
    recipe = ", ".join(f"{m.replace(' (tiny)', ' after stage 2')} {acc[(m, most)]:.1f}%" for m in steps
                       if (m, most) in acc)
    lines += ["", f"Vamba through the recipe ({most} frames): {recipe}.", "",
              "## Prefill cost, Vamba vs Qwen2-VL (logits_to_keep=1), where the savings are real", "",
              "`small` (~0.2B, random weights, 640x360 frames): measured on this CPU (`vamba bench --model small`); "
              "7B: memory accounted, FLOPs counted on the meta device (`vamba bench --model 7b --flops-only`).", "",
              "| flavor | frames | visual tokens | Qwen2-VL | Vamba | Vamba streaming | Vamba / Qwen2-VL |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for flavor, key, unit, scale in (("small", "time_s", "s", 1), ("7b", "account_total_gb", "GB", 1),
                                     ("7b", "flops_whole", "TFLOPs", 1e-12)):
        for f in sorted({c["frames"] for c in costs if c["flavor"] == flavor}):
            q, v, st = (cost.get((flavor, s, f), {}).get(key) for s in ("qwen2vl", "vamba", "vamba_stream"))
            ratio = fmt(v / q if q and v else None, ".2f")
            lines.append(f"| {flavor} ({unit}) | {f} | {cost[(flavor, 'vamba', f)]['visual_tokens']:,} | "
                         f"{fmt(q and q * scale, '.4g')} | {fmt(v and v * scale, '.4g')} | "
                         f"{fmt(st and st * scale, '.4g')} | {ratio} |")
    lines += ["", "Wall time: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + f"; total {total:.0f}s"]
    return "\n".join(lines) + "\n"


PANELS = (  # (flavor, CSV column, scale, y label, caption: what was measured and what was accounted)
    ("small", "time_s", 1, "prefill time (s)", "measured on this CPU: prefill time, ~0.2B `small` flavor"),
    ("7b", "account_total_gb", 1, "prefill memory (GB)", "accounted (not measured): 7B prefill memory, bf16"),
    ("7b", "flops_whole", 1e-12, "prefill TFLOPs", "counted on the meta device: 7B prefill FLOPs"))


def plot(results: list[dict], costs: list[dict], path: Path) -> None:
    """Accuracy of the tiny models, then the efficiency panels, each with a one-line caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.9))
    for model, color in zip(MODELS, ("tab:blue", "tab:red")):
        pts = sorted((r["frames"], r["accuracy"]) for r in results if r["model"] == model)
        axes[0].plot(*zip(*pts), marker="o", color=color, label=model)
    axes[0].axhline(CHANCE, color="grey", linestyle="--", linewidth=1, label=f"chance ({CHANCE:.0f}%)")
    axes[0].set(ylabel="accuracy (%)", ylim=(0, 105))
    captions = ["measured: tiny models' accuracy, held-out synthetic videos"]
    for ax, (flavor, key, scale, ylabel, caption) in zip(axes[1:], PANELS):
        for system, color, label in (("qwen2vl", "tab:blue", "Qwen2-VL"), ("vamba", "tab:red", "Vamba"),
                                     ("vamba_stream", "tab:orange", "Vamba streaming")):
            pts = sorted((c["frames"], c[key] * scale) for c in costs
                         if c["flavor"] == flavor and c["system"] == system and c[key] is not None)
            if pts:
                ax.plot(*zip(*pts), marker="o", color=color, label=label)
        ax.set(ylabel=ylabel, yscale="log")
        captions.append(caption)
    for ax, caption in zip(axes, captions):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("frames")
        ax.set_title(caption, fontsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quickstart", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/quickstart")
    parser.add_argument("--small", action="store_true", help="tiny sizes (seconds per step; used by the tests)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of configs/quickstart.yaml")
    args = parser.parse_args(argv)
    qs = compose("quickstart_small" if args.small else "quickstart", args.overrides)
    out = Path(args.out).resolve()
    started = time.perf_counter()
    results, timings = run_steps(qs, out)
    _banner("6/6 summary")
    costs = bench_rows(out)
    table = summary_table(results, costs, timings, time.perf_counter() - started, qs.data.num_frames)
    (out / "summary.md").write_text(table)
    (out / "summary.json").write_text(json.dumps({"results": results, "prefill": costs, "timings_s": timings},
                                                 indent=2))
    plot(results, costs, out / "summary.png")
    print(table)
    print(f"written: {out / 'summary.md'}, {out / 'summary.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
