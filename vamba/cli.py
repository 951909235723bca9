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

Run `vamba <command> --help` for a command's options. A mistake in the input (a bad option value or config key, an
unknown benchmark, a missing or unreadable file or folder) prints one line and exits with code 2; `--debug` (or
VAMBA_DEBUG=1) shows its traceback. Any other error is a bug and shows its traceback.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import sys
import typing
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from .modeling.errors import ArgParser, UsageError
from .parallel import launch


def _convert(argv: list[str]) -> int:
    parser = ArgParser(prog="vamba convert", description="Convert a Qwen2-VL checkpoint to Vamba.")
    parser.add_argument("--base", required=True, help="Qwen2-VL checkpoint directory (config.json + safetensors)")
    parser.add_argument("--out", required=True, help="output directory for the Vamba checkpoint")
    parser.add_argument("--mixer-type", choices=["mamba2", "mamba1", "none"], default="mamba2")
    parser.add_argument("--cross-attn-init", choices=["self_attn", "random"], default="self_attn")
    parser.add_argument("--no-alpha-balancing", action="store_true", help="plain sum of self- and cross-attention")
    args = parser.parse_args(argv)
    from .modeling.convert import convert_checkpoint

    out = convert_checkpoint(args.base, args.out, mixer_type=args.mixer_type, cross_attn_init=args.cross_attn_init,
                             use_alpha_balancing=not args.no_alpha_balancing)
    print(f"wrote Vamba checkpoint to {out}")
    return 0


def _export(argv: list[str]) -> int:
    parser = ArgParser(prog="vamba export", description="Re-save a Vamba checkpoint (ours or the release's) in a "
                                                        "chosen format.")
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

    from .config import CONFIG_DIR, check_keys, compose
    from .train import config  # noqa: F401  (registers the schemas before Hydra composes)

    @hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
    def app(cfg) -> None:
        if report_user_errors("vamba train", lambda: run_training(check_keys(cfg, "train"))) == 2:
            sys.exit(2)
        launch.finish()  # under torchrun

    if not any(a.startswith("-") for a in argv):  # plain overrides: a bad key or value is one line, not Hydra's
        compose("train", argv)
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

        overrides = [f"{k}={v}" for k, v in _dotted(OmegaConf.to_container(OmegaConf.create(dict(cfg.eval_after))))]
        overrides += [f"model.path={final}", f"model.type={cfg.model.kind}",
                      f"output_dir={Path(cfg.output_dir) / 'eval'}"]
        run_eval(compose("eval", overrides))
    return trainer, final


def _dotted(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every leaf: `eval_after.judge.base_url=...` becomes the override `judge.base_url=...`."""
    return [kv for k, v in tree.items() for kv in (_dotted(v, f"{prefix}{k}.") if isinstance(v, dict)
                                                   else [(f"{prefix}{k}", v)])]


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
    launch.finish()  # under torchrun
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


COMMANDS = {"convert": _convert, "export": _export, "train": _train, "eval": _eval, "chat": _chat, "bench": _bench,
            "distill-teacher": _distill_teacher}


def main(argv: list[str] | None = None) -> int:
    """Run one command; bad input raises (for programs and tests; the command line is `run`)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if argv[0] not in COMMANDS:
        raise UsageError(f"unknown command {argv[0]!r}; expected one of: {', '.join(COMMANDS)} (see `vamba --help`)")
    return COMMANDS[argv[0]](argv[1:])


def report_user_errors(prog: str, fn, *args) -> Any:
    """`fn(*args)`, except that a user error (`UsageError`, a file error, a Hydra/OmegaConf config error) prints
    one line to stderr and returns 2; unless VAMBA_DEBUG=1, which re-raises it with its traceback."""
    try:
        return fn(*args)
    except (UsageError, OSError, HydraException, OmegaConfBaseException) as e:
        if os.environ.get("VAMBA_DEBUG") == "1":
            raise
        reason = e.__cause__ if isinstance(e, HydraException) and e.__cause__ else e  # OmegaConf's names the key
        lines = [ln.strip() for ln in str(reason).split("Config search path")[0].splitlines() if ln.strip()]
        text = " ".join(ln for ln in lines if not ln.startswith(("To append", "full_key", "object_type", "reference")))
        hint = f" (see `{prog} --help`)" if isinstance(e, (HydraException, OmegaConfBaseException)) else ""
        print(f"{prog}: error: {text or type(e).__name__}{hint}", file=sys.stderr)
        return 2


def run(argv: list[str] | None = None) -> int:
    """The `vamba` command line (also under torchrun): `main`, with user errors reported as one line (exit code 2,
    see the module doc); a torchrun worker that fails leaves its process group cleanly and torchrun stops the others."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:
        argv.remove("--debug")
        os.environ["VAMBA_DEBUG"] = "1"
    try:
        code = report_user_errors(f"vamba {argv[0]}" if argv and argv[0] in COMMANDS else "vamba", main, argv)
    except BaseException:
        if launch.initialized():
            launch.abort(1)  # a SystemExit keeps its own code
        raise
    if code == 2 and launch.initialized():
        launch.abort(2)
    return code


if __name__ == "__main__":
    sys.exit(run())
