"""`vamba <command>`: the project's one command-line entry point.

Commands:
    convert          turn a Qwen2-VL checkpoint directory into a Vamba initialisation
    export           re-save a Vamba checkpoint in the original release's format (or ours)
    train            train a stage (Hydra overrides; multi-GPU: `torchrun -m vamba train ...`)
    eval             score a model on a benchmark (Hydra overrides; `vamba eval --help`)
    chat             ask a model about a video
    bench            prefill FLOPs / memory / time of Vamba vs Qwen2-VL (tables, CSV, plots);
                     `vamba bench --context-parallel`: training memory per rank and frames that fit at 7B;
                     `vamba bench --ops`: ATen calls and bytes of one 7B mixer layer (GPU time bound)
    distill-teacher  store a Qwen2-VL teacher's top-k logits over a training mixture

Run `vamba <command> --help` for a command's options.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import sys
import typing
from pathlib import Path
from typing import Any


def _convert(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vamba convert", description="Convert a Qwen2-VL checkpoint to Vamba.")
    parser.add_argument("--base", required=True, help="Qwen2-VL checkpoint directory (config.json + safetensors)")
    parser.add_argument("--out", required=True, help="output directory for the Vamba checkpoint")
    parser.add_argument("--mixer-type", choices=["mamba2", "mamba1", "none"], default="mamba2")
    parser.add_argument("--cross-attn-init", choices=["self_attn", "random"], default="self_attn")
    parser.add_argument("--no-alpha-balancing", action="store_true", help="plain sum of self- and cross-attention")
    args = parser.parse_args(argv)
    from .modeling.convert import convert_checkpoint

    out = convert_checkpoint(
        args.base,
        args.out,
        mixer_type=args.mixer_type,
        cross_attn_init=args.cross_attn_init,
        use_alpha_balancing=not args.no_alpha_balancing,
    )
    print(f"wrote Vamba checkpoint to {out}")
    return 0


def _export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vamba export", description="Re-save a Vamba checkpoint (ours or the release's) in a chosen format."
    )
    parser.add_argument("--model", required=True, help="Vamba checkpoint directory (our format or the release's)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--format", choices=["release", "vamba"], default="release",
                        help="release: flat config.json the original release's code reads as saved; vamba: ours")
    args = parser.parse_args(argv)
    from .modeling.convert import export_checkpoint

    out = export_checkpoint(args.model, args.out, format=args.format)
    print(f"wrote {args.format}-format Vamba checkpoint to {out}")
    return 0


def _train(argv: list[str]) -> int:
    import hydra

    from .config import CONFIG_DIR
    from .train import config  # noqa: F401  (registers the schemas before Hydra composes)

    @hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
    def app(cfg) -> None:
        run_training(cfg)
        exit_cleanly()

    sys.argv = ["vamba train", *argv]  # Hydra reads its overrides (and --help, --multirun) from sys.argv
    app()
    return 0


def run_training(cfg: Any) -> tuple[Any, Path]:
    """Train one stage (`vamba.train.trainer.train`), then score the export with `cfg.eval_after` if set (rank 0;
    results in <output_dir>/eval). Returns the trainer and the export directory."""
    from .train.trainer import is_main_process, train

    trainer, final = train(cfg)
    if cfg.eval_after and is_main_process():
        from omegaconf import OmegaConf

        from .config import compose
        from .evals.runner import run_eval

        overrides = [f"{k}={v}" for k, v in OmegaConf.to_container(OmegaConf.create(dict(cfg.eval_after))).items()]
        overrides += [f"model.path={final}", f"model.type={cfg.model.kind}",
                      f"output_dir={Path(cfg.output_dir) / 'eval'}"]
        run_eval(compose("eval", overrides))
    return trainer, final


def exit_cleanly() -> None:
    """End a torchrun worker without running C++ static destructors.

    With gloo (CPU), tearing down the process group in interpreter shutdown intermittently aborts the finished
    process ("terminate called without an active exception" from a joinable std::thread), turning a completed
    run into a failure. Everything is already written and flushed here, so the worker exits at once.
    """
    import os

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _schema_help(schema, prefix: str = "") -> list[str]:
    lines, hints = [], typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if f.metadata.get("omegaconf_ignore"):  # set in code, not a config key
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        kinds = [t for t in (hints[f.name], *typing.get_args(hints[f.name])) if isinstance(t, type)
                 and issubclass(t, enum.Enum)]
        if dataclasses.is_dataclass(default):
            lines += _schema_help(type(default), prefix=f"{prefix}{f.name}.")
        elif kinds:
            value = default.value if isinstance(default, enum.Enum) else default
            lines.append(f"  {prefix}{f.name}={value!r}  ({'|'.join(str(m.value) for m in kinds[0])})")
        else:
            lines.append(f"  {prefix}{f.name}={default!r}")
    return lines


def _eval(argv: list[str]) -> int:
    from .evals.runner import EvalConfig

    if any(a in ("-h", "--help") for a in argv):
        from .evals.benchmarks import list_benchmarks

        print("usage: vamba eval key=value ...  (Hydra overrides; defaults below)\n")
        print("\n".join(_schema_help(EvalConfig)))
        print(f"\nbenchmarks: {', '.join(list_benchmarks())}")
        return 0
    from .config import compose
    from .evals.runner import run_eval

    run_eval(compose("eval", argv))
    exit_cleanly()  # under torchrun
    return 0


def _chat(argv: list[str]) -> int:
    from .chat import main as chat_main

    return chat_main(argv)


def _bench(argv: list[str]) -> int:
    if argv and argv[0] in ("--context-parallel", "--ops"):  # 7B training account per rank; a mixer layer's ops
        from .efficiency import context_parallel, ops

        return (ops if argv[0] == "--ops" else context_parallel).main(argv[1:])
    from .efficiency.bench import main as bench_main

    return bench_main(argv) or 0


def _distill_teacher(argv: list[str]) -> int:
    from .config import compose
    from .train.teacher import build_parser, write_teacher_logits

    args = build_parser().parse_args(argv)
    return write_teacher_logits(compose("train", args.overrides), args)


COMMANDS = {
    "convert": _convert,
    "export": _export,
    "train": _train,
    "eval": _eval,
    "chat": _chat,
    "bench": _bench,
    "distill-teacher": _distill_teacher,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
