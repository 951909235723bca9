#!/usr/bin/env bash
# The whole Vamba recipe at toy scale on CPU: synthetic data -> tiny Qwen2-VL -> convert -> stage 1 -> stage 2
# -> evaluate and profile both -> one table + plot under outputs/quickstart/. Re-running reuses finished steps.
# Extra arguments go to scripts/quickstart.py (e.g. --small, --out DIR, overrides of configs/quickstart.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
venv .venv
install -e .
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 WANDB_MODE=${WANDB_MODE:-disabled}
exec .venv/bin/python scripts/quickstart.py "$@"
