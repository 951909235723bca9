"""Parallelism that the model code does not own: context parallelism (one sample's video over a group of ranks)."""

from .context import ContextParallel, context_parallel_groups

__all__ = ["ContextParallel", "context_parallel_groups"]
