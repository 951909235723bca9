#!/usr/bin/env bash
# The newest-transformers lane: the model, release-golden and conversion tests against the NEWEST transformers
# release pyproject.toml allows, in its own venv .venv-tf-newest (scripts/test.sh runs the whole suite on the OLDEST
# allowed). Every difference between the allowed releases lives in vamba/modeling/compat.py. Extra arguments go to
# pytest (e.g. -k release -x).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
venv .venv-tf-newest
install -e ".[dev]"
# The newest release in the project's range (upgrades transformers and what it needs, nothing else).
RANGE=$(sed -n 's/^ *"transformers\(>=[^"]*\)",.*/\1/p' pyproject.toml)
install --upgrade "transformers$RANGE"
"$V/bin/python" - <<'PY'
import importlib.metadata as m, torch
from vamba.modeling.compat import SUPPORTED, TESTED
tf = m.version("transformers")
assert torch.version.cuda is None, f"torch is not the CPU build: {torch.__version__}"
assert ".".join(tf.split(".")[:2]) == TESTED[-1], f"transformers {tf} is not the newest tested release {TESTED[-1]} ({SUPPORTED})"
print(f"newest-transformers lane: transformers {tf} (allowed {SUPPORTED}), torch {torch.__version__}")
PY
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export WANDB_MODE=${WANDB_MODE:-disabled}
exec "$V/bin/python" -m pytest tests/test_model.py tests/test_release.py tests/test_mamba2_mixer.py \
  tests/test_processor.py tests/test_flavors.py -p no:cacheprovider "$@"
