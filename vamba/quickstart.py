"""The whole Vamba recipe at toy scale on CPU, in one command (`scripts/quickstart.sh`).

1. generate synthetic long-video data (videos with coloured "needles", LVBench-style questions, captions);
2. train a tiny Qwen2-VL from scratch on it — the stand-in for the pretrained base;
3. convert it to Vamba (cross-attention copied from self-attention, fresh Mamba-2 mixers, alpha 0.5);
4. stage 1 (new layers only), then stage 2 (all weights), with the same entry point and configs as GPU runs;
5. evaluate the tiny Qwen2-VL and the tiny Vamba with `vamba eval` at several frame counts, and profile both;
6. print one table (accuracy, prefill time and peak memory per frame count, chance named) and write it, with a
   PNG plot, under `outputs/quickstart/`.

Every step reuses its output if it is already there, so re-running is cheap. `--small` shrinks every size (the
test suite runs it end to end).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SIZES = {
    # data: videos, questions per video, frames per video; steps per training run; eval frame counts
    "full": dict(
        train_videos=200,
        eval_videos=24,
        questions=6,
        frames=16,
        images=64,
        base_steps=300,
        stage1_steps=120,
        stage2_steps=150,
        eval_frames=(8, 16),
        bench_frames="16,64,256",
    ),
    "small": dict(
        train_videos=8,
        eval_videos=4,
        questions=2,
        frames=8,
        images=8,
        base_steps=4,
        stage1_steps=2,
        stage2_steps=2,
        eval_frames=(4, 8),
        bench_frames="8,16",
    ),
}
TINY = [
    "model.tiny.hidden_size=128",
    "model.tiny.intermediate_size=256",
    "model.tiny.num_attention_heads=4",
    "model.tiny.num_key_value_heads=2",
    "model.tiny.vision.depth=2",
    "model.tiny.vision.embed_dim=64",
]


def _banner(step: str) -> float:
    print(f"\n=== {step} ===", flush=True)
    return time.perf_counter()


def _compose(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from .config import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def _train(overrides: list[str]) -> Path:
    from .train.trainer import run

    cfg = _compose("train", overrides)
    final = Path(cfg.output_dir) / "final"
    if (final / "config.json").is_file():
        print(f"reusing {final}")
        return final
    return run(cfg)


def _eval(model: Path, model_type: str, data: Path, frames: int, out: Path) -> dict:

    from .evals.runner import run_eval

    overrides = [
        "benchmark=synthetic",
        f"model.path={model}",
        f"model.type={model_type}",
        f"data_dir={data}",
        f"frames={frames}",
        f"output_dir={out}",
        "max_new_tokens=2",
    ]
    return run_eval(_compose("eval", overrides))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quickstart", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/quickstart")
    parser.add_argument("--small", action="store_true", help="tiny sizes (seconds per step; used by the tests)")
    args = parser.parse_args(argv)
    size = SIZES["small" if args.small else "full"]
    out = Path(args.out).resolve()
    started = time.perf_counter()
    timings: dict[str, float] = {}

    t = _banner("1/6 synthetic data")
    from .data.synthetic import SyntheticConfig, generate

    data = out / "data"
    generate(
        data,
        SyntheticConfig(
            train_videos=size["train_videos"],
            eval_videos=size["eval_videos"],
            questions_per_video=size["questions"],
            num_frames=size["frames"],
            num_images=size["images"],
            tasks=("needle_color", "needle_shape"),
        ),
    )
    timings["data"] = time.perf_counter() - t

    common = [
        "experiment=synthetic_cpu",
        "eval_after=null",
        f"data.sources.0.annotation={data}/train.json",
        f"data.sources.0.root={data}",
        f"data.sources.1.annotation={data}/captions.jsonl",
        f"data.sources.1.root={data}",
        f"data.sources.0.frames.num_frames={size['frames']}",
        "dataloader_workers=1",
        "logging_steps=10",
        "save_steps=100000",
    ]

    t = _banner("2/6 tiny Qwen2-VL from scratch (the stand-in for the pretrained base)")
    base = _train(
        [
            *common,
            "model=qwen2vl_tiny",
            "train=sft",
            *TINY,
            "data.sources.1.weight=0",
            f"output_dir={out}/qwen2vl",
            "run_name=qwen2vl-base",
            f"train.max_steps={size['base_steps']}",
            "train.learning_rate=1e-3",
        ]
    )
    timings["base"] = time.perf_counter() - t

    t = _banner("3/6 convert to Vamba")
    from .modeling.convert import convert_checkpoint

    init = out / "vamba-init"
    if not (init / "config.json").is_file():  # also carries the base's tokenizer and processor files over
        convert_checkpoint(base, init, mixer_config={"d_state": 16, "headdim": 32, "chunk_size": 64})
    timings["convert"] = time.perf_counter() - t

    t = _banner("4/6 stage 1 (new layers) and stage 2 (all weights)")
    vamba_common = [*common, "model=checkpoint"]
    stage1 = _train(
        [
            *vamba_common,
            f"model.path={init}",
            "train=pretrain",
            f"output_dir={out}/vamba-stage1",
            "run_name=vamba-stage1",
            f"train.max_steps={size['stage1_steps']}",
            "train.learning_rate=1e-3",
            "data.sources.1.weight=0.25",
        ]
    )
    stage2 = _train(
        [
            *vamba_common,
            f"model.path={stage1}",
            "train=sft",
            f"output_dir={out}/vamba-stage2",
            "run_name=vamba-stage2",
            f"train.max_steps={size['stage2_steps']}",
            "train.learning_rate=5e-4",
            "data.sources.1.weight=0",
        ]
    )
    timings["train"] = time.perf_counter() - t

    t = _banner("5/6 evaluate both models and profile them")
    results = []
    for name, path, kind in (("Qwen2-VL (tiny)", base, "qwen2_vl"), ("Vamba (tiny)", stage2, "vamba")):
        for frames in size["eval_frames"]:
            summary = _eval(path, kind, data, frames, out / "eval" / f"{kind}-f{frames}")
            results.append(
                {
                    "model": name,
                    "frames": frames,
                    "accuracy": summary["headline"],
                    "questions": summary["overall"]["total"],
                    "questions_per_s": summary["meta"].get("questions_per_s"),
                }
            )
    from .efficiency.bench import main as bench_main

    bench_dir = out / "bench"
    bench_main(["--model", "tiny", "--frames", size["bench_frames"], "--out", str(bench_dir)])
    timings["eval+bench"] = time.perf_counter() - t

    _banner("6/6 summary")
    table = _summary(results, bench_dir, timings, time.perf_counter() - started)
    (out / "summary.md").write_text(table)
    (out / "summary.json").write_text(json.dumps({"results": results, "timings_s": timings}, indent=2))
    _plot(results, out / "summary.png")
    print(table)
    print(f"written: {out / 'summary.md'}, {out / 'summary.png'}")
    return 0


def _summary(results: list[dict], bench_dir: Path, timings: dict[str, float], total: float) -> str:
    import csv

    lines = [
        "## Accuracy on the synthetic long-video benchmark (4 options, chance 25%)",
        "",
        "| model | frames | accuracy (%) | questions | questions/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        qps = "–" if r["questions_per_s"] is None else f"{r['questions_per_s']:.1f}"
        lines.append(f"| {r['model']} | {r['frames']} | {r['accuracy']:.1f} | {r['questions']} | {qps} |")
    csv_path = bench_dir / "results.csv"
    if csv_path.exists():
        rows = list(csv.DictReader(csv_path.open()))
        if rows:
            keys = list(rows[0])
            lines += [
                "",
                "## Prefill cost on this machine (`vamba bench --model tiny`)",
                "",
                "| " + " | ".join(keys) + " |",
                "|" + "---|" * len(keys),
            ]
            lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    lines += ["", "Wall time: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + f"; total {total:.0f}s"]
    return "\n".join(lines) + "\n"


def _plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for model in dict.fromkeys(r["model"] for r in results):
        pts = [(r["frames"], r["accuracy"]) for r in results if r["model"] == model]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=model)
    ax.axhline(25, color="grey", linestyle="--", linewidth=1, label="chance (25%)")
    ax.set_xlabel("frames")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Synthetic long-video benchmark (tiny models, CPU)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
