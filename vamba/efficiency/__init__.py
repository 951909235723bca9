"""Efficiency tools: FLOP counting, the memory accounts, measured prefill/training steps and `vamba bench`."""

from .flops import count_flops, flop_counter

__all__ = ["count_flops", "flop_counter"]
