#!/usr/bin/env bash
# The lmms-eval lane: lmms-eval itself runs `lmms-eval --model vamba` (one process, then two under torchrun, gloo on
# CPU) on a local task, offline, and its scores are checked against `vamba eval`'s (tests/lmms), plus the adapter's
# own tests; in its own venv .venv-lmms, installed as a user would: the project with its `lmms` extra. Extra
# arguments go to pytest (e.g. -x).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
venv .venv-lmms --no-compile
# torch stays pinned while lmms-eval's dependencies resolve (torchvision would otherwise upgrade it to a CUDA build);
# the `lmms` extra pins lmms-eval and filelock (README, "Evaluate").
install -e ".[lmms]" "lmms-eval==0.7.3" "torch==2.13.0" pytest
# PyPI's torchvision is a CUDA build: beside CPU torch it fails to load ("operator torchvision::nms does not exist")
# and transformers' Qwen2-VL import fails with it; timm imports it (and the `accelerate` command imports timm). Neither
# this model nor lmms-eval's video tasks need them (README, "With lmms-eval").
"$V/bin/python" -m pip uninstall -q -y torchvision timm
"$V/bin/python" - <<'PY'
import sys, torch
from transformers import Qwen2VLForConditionalGeneration  # noqa: F401 - fails beside a mismatched torchvision
sys.exit(None if torch.version.cuda is None else f"torch is not the CPU build: {torch.__version__}")
PY
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$V/bin/python" -m pytest tests/lmms tests/test_eval.py -k "lmms" -p no:cacheprovider "$@"
