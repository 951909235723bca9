"""Parallelism that the model code does not own: context parallelism (one sample's video over a group of ranks) and
the process group's lifecycle under torchrun (`launch`)."""

from . import launch
from .context import ContextParallel, check_context_parallel, context_parallel_groups, share_batches

__all__ = ["ContextParallel", "launch", "check_context_parallel", "context_parallel_groups", "share_batches"]
