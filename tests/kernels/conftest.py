"""Kernel lane fixtures: mamba_ssm's Triton kernels on CPU under Triton's interpreter (see kernel_harness)."""

from __future__ import annotations

import os

import pytest
from kernel_harness import cpu_shims, extra_present, install  # tests/kernels is on sys.path (no __init__.py)

if extra_present():
    # Read by Triton when its kernels are defined (at import): set before anything imports triton.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def kernels():
    """The kernel table of vamba's loader, with the CPU shims active for the whole session."""
    with cpu_shims():
        yield install()
