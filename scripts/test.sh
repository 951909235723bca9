#!/usr/bin/env bash
# One command from a fresh clone: make .venv, install the CPU torch wheel and the project, run the whole suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k ssd -x). The suite runs on the OLDEST transformers release
# the project allows (pinned below); scripts/test_transformers.sh runs the model tests on the newest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
# Install when these scripts or pyproject.toml changed since the last install (a stamp in .venv), so a second run
# starts testing at once; `rm .venv/.vamba-installed` forces a reinstall.
stamp=.venv/.vamba-installed
want=$(cat pyproject.toml scripts/test.sh scripts/venv.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  venv .venv
  install -e ".[dev]" "transformers==5.23.0"
  echo "$want" > "$stamp"
fi
# One pytest worker per CPU (pytest-xdist), a whole test file per worker so a module's fixtures are built once, one
# torch thread per worker; VAMBA_TEST_WORKERS=0 runs everything in one process.
workers=${VAMBA_TEST_WORKERS:-$(nproc)}
parallel=()
if [ "$workers" != 0 ]; then
  parallel=(-n "$workers" --dist loadfile)
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export WANDB_MODE=${WANDB_MODE:-disabled}
exec .venv/bin/python -m pytest "${parallel[@]}" "$@"
