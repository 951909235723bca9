#!/usr/bin/env bash
# One command for a CUDA machine: kernel parity, and Vamba vs Qwen2-VL prefill/training memory and time at the 7B
# shapes (random weights, bf16, no downloads): one table, and JSON (--out, default ./gpu_check.json). Under 8 minutes
# on one 80 GB GPU. See scripts/gpu_check.py for what each row means.
#
#   scripts/gpu_check.sh [--wheels DIR] [--tiny] [--out FILE] [--budget SECONDS] [--autotune] [--skip-parity]
#
# --wheels DIR: first install the wheels in DIR (made by scripts/gpu_wheels.sh on a machine with network) into
#   ${GPU_CHECK_SITE:-/tmp/site}, without index or dependencies, and put it ahead of the machine's packages: for a GPU
#   machine without network or with an older transformers. --tiny: the same check on CPU at the tests' tiny size.
# The repository is used in place (PYTHONPATH), nothing is installed into the machine's Python.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
args=()
WHEELS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    --wheels=*) WHEELS="${1#--wheels=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
EXTRA=""
if [ -n "$WHEELS" ]; then
  SITE=${GPU_CHECK_SITE:-/tmp/site}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
  EXTRA=":$SITE"
fi
export PYTHONPATH="$PWD$EXTRA${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PY" scripts/gpu_check.py ${args[@]+"${args[@]}"}
