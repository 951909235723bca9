"""`vamba <command>`: the project's one command-line entry point.

Commands:
    convert   turn a Qwen2-VL checkpoint directory into a Vamba initialisation
"""

from __future__ import annotations

import argparse
import sys


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


COMMANDS = {"convert": _convert}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
