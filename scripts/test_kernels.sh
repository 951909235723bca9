#!/usr/bin/env bash
# The kernel lane: the mixers' fused CUDA path on CPU, with mamba_ssm's Triton kernels run by Triton's interpreter
# (TRITON_INTERPRET=1): tests/kernels, in its own venv .venv-kernels. That venv holds only torch (CPU), triton, a
# Triton-only mamba_ssm build and transformers, none of the project's other dependencies, so it also shows that the
# model and scripts/gpu_check.py import without them. Extra arguments go to pytest (e.g. -k decoding -x).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
venv .venv-kernels --no-compile
install "triton==3.9.0" numpy einops packaging "transformers>=5.23,<5.24" pytest setuptools wheel
if [ "$("$V/bin/python" -c 'import importlib.metadata as m; print(m.version("mamba_ssm"))' 2>/dev/null)" != "2.3.2.post1" ]; then
  # FORCE_BUILD: without it mamba_ssm's setup looks for a prebuilt wheel named after torch.version.cuda, None on CPU
  # torch, and crashes; SKIP_CUDA_BUILD leaves the Python and Triton code; --no-deps: its dependencies pull large
  # unrelated packages.
  MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE install --no-build-isolation --no-deps "mamba-ssm==2.3.2.post1"
fi
"$V/bin/python" -c 'import sys, torch; sys.exit(None if torch.version.cuda is None else f"torch is not the CPU build: {torch.__version__}")'
export TRITON_INTERPRET=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# `python -m pytest` puts the repository root on sys.path: the project is used in place, not installed.
exec "$V/bin/python" -m pytest tests/kernels -p no:cacheprovider "$@"
