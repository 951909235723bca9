"""Depthwise causal convolution over packed sequences, with a streaming state: the mixers' pure-PyTorch conv.

The Mamba mixers (`vamba.modeling.mamba2`) convolve their inputs with a short per-channel causal kernel before the
scan. This is that convolution in PyTorch (any device), with mamba_ssm / causal-conv1d's conventions: packed
sequences given by ``seq_idx`` never see each other, and a conv state of the last ``k - 1`` inputs lets a long input
be processed in pieces. The fused CUDA path (`vamba.modeling.mamba_fused`) falls back to it where causal-conv1d is
absent or cannot take the arguments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["causal_depthwise_conv"]

def causal_depthwise_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    seq_idx: torch.Tensor | None = None,
    conv_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal convolution (no activation) that never mixes tokens of different packed sequences.

    out[:, :, t] = bias + sum_j weight[:, j] * x[:, :, t - (k - 1) + j], where taps reaching before the start of
    the token's sequence read zero, exactly as if each sequence were convolved on its own with zero padding.

    Args:
        x: (b, d, l) pre-convolution inputs.
        weight: (d, k) per-channel kernel; bias: (d,) or None.
        seq_idx: (b, l) sequence ids, or None for one sequence per row.
        conv_state: (b, d, k - 1) the k - 1 inputs preceding ``x`` (streaming); they belong to the sequence of the
            row's first token. Zeros (= the start of a sequence) when None.

    Returns:
        out (b, d, l) and the new conv state (b, d, k - 1): the last k - 1 inputs, with inputs of a sequence other
        than the last token's zeroed so that a continuation cannot see them.
    """
    batch, dim, seqlen = x.shape
    width = weight.shape[1]
    x_ext = _extend_with_state(x, conv_state, width)  # (b, d, k - 1 + l)
    new_state = _next_conv_state(x_ext, seq_idx, width)

    if seq_idx is None:
        out = F.conv1d(x_ext, weight[:, None].to(x.dtype), bias.to(x.dtype) if bias is not None else None, groups=dim)
        return out, new_state

    # With packed sequences a tap must be dropped depending on the output position, which F.conv1d cannot do;
    # a depthwise kernel is only k taps wide, so sum the k shifted, masked copies instead (linear in l).
    seq_ext = _extend_seq_idx(seq_idx, width)
    out = x.new_zeros(batch, dim, seqlen) if bias is None else bias.to(x.dtype)[:, None].expand(batch, dim, seqlen)
    for j in range(width):
        same_seq = (seq_ext[:, j:j + seqlen] == seq_idx)[:, None]  # (b, 1, l)
        out = out + weight[:, j, None].to(x.dtype) * x_ext[:, :, j:j + seqlen] * same_seq
    return out, new_state


def _extend_with_state(x: torch.Tensor, conv_state: torch.Tensor | None, width: int) -> torch.Tensor:
    """(b, d, l) -> (b, d, k - 1 + l): the conv state (or zeros) followed by x."""
    if conv_state is None:
        conv_state = x.new_zeros(x.shape[0], x.shape[1], width - 1)
    return torch.cat([conv_state.to(x.dtype), x], dim=-1)


def _extend_seq_idx(seq_idx: torch.Tensor, width: int) -> torch.Tensor:
    """(b, l) -> (b, k - 1 + l): the conv-state positions belong to the first token's sequence."""
    return torch.cat([seq_idx[:, :1].expand(-1, width - 1), seq_idx], dim=1)


def _next_conv_state(x_ext: torch.Tensor, seq_idx: torch.Tensor | None, width: int) -> torch.Tensor:
    """Conv state after the last token: the last k - 1 inputs of ``x_ext`` (b, d, k - 1 + l) -> (b, d, k - 1),
    zeroed where they belong to a sequence other than the last token's (a continuation must not see them)."""
    state = x_ext[:, :, x_ext.shape[-1] - (width - 1):]
    if seq_idx is not None:
        seq_ext = _extend_seq_idx(seq_idx, width)
        state = state * (seq_ext[:, seq_ext.shape[1] - (width - 1):] == seq_idx[:, -1:])[:, None]
    return state
