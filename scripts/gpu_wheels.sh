#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the wheels that `scripts/gpu_check.sh --wheels .whl` installs on a GPU machine
# without network: run it here, where PyPI is reachable; the folder then travels with the working tree.
#
# Made for the check's machine: CPython 3.12 on manylinux x86_64 with torch 2.11 + CUDA, triton 3.6, einops,
# transformers 5.17 and its dependencies, and no mamba_ssm / causal-conv1d / flash-attn. It needs exactly:
# - transformers 5.23.0 (the oldest release Vamba allows, vamba/modeling/compat.py; the dependencies 5.23 checks
#   at import, huggingface_hub >= 1.31, tokenizers 0.23, safetensors >= 0.8 and regex >= 2025.10.22, are those
#   5.17 already requires, except huggingface_hub whose 1.33 there fits both);
# - mamba-ssm 2.3.2.post1 without its CUDA extensions (pure Python + Triton, py3-none-any): PyPI has only its source,
#   whose setup compiles them. Built here with the Python in $PYTHON (default .venv/bin/python, which has torch
#   and setuptools; mamba_ssm's setup imports torch).
# Usage: scripts/gpu_wheels.sh [DIR]   (default .whl)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$DIR"
rm -f "$DIR"/*.whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DIR" "transformers==5.23.0"
# FORCE_BUILD: without it the setup looks for a prebuilt wheel named after torch.version.cuda (None on CPU torch).
MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$DIR" \
  "mamba-ssm==2.3.2.post1"
ls -l "$DIR"/*.whl
du -sh "$DIR"
