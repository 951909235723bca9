"""`python -m vamba <command>`, so that `torchrun --nproc_per_node=N -m vamba train ...` runs the `vamba` command."""

import sys

from .cli import run

sys.exit(run())
