"""Parallelism that the model code does not own: context parallelism (one sample's video over a group of ranks)."""

from .context import ContextParallel, check_context_parallel, context_parallel_groups, share_batches

__all__ = ["ContextParallel", "check_context_parallel", "context_parallel_groups", "share_batches"]
