"""Efficiency tools: FLOP counting (and, later, memory accounting and the profiler behind `vamba bench`)."""

from .flops import count_flops, flop_counter

__all__ = ["count_flops", "flop_counter"]
