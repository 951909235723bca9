"""Cross-attention from text tokens to the video stream (DESIGN.md section 2).

It has exactly the shapes of the layer's self-attention (q: d->d with bias, k/v: d->kv_heads*head_dim with bias,
o: d->d without bias), so it subclasses transformers' `Qwen2VLAttention` for its projections and parameter
names; that is what makes "initialise cross-attention by copying self-attention" a plain state-dict copy.
Only the forward differs: keys/values come from the video, attention is non-causal and limited to the sample.
A boolean mask keeps SDPA off flash-attention (math kernel on CUDA: float32 scores, keys/values repeated per head),
so who sees what comes as `attention_blocks`: one mask-free call for the batch, or one per packed sample, with GQA
left to the kernel (flash does it without repeating keys/values); the mask only where blocks cannot describe it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLAttention, rotate_half

from .video_slice import SliceContext, attention_with_lse, merge_across_slices


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate one tensor `x` (B, heads, L, head_dim) with `cos`/`sin` (B, L, head_dim)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


Block = tuple[int, int, int, int, int]  # (row, t0, t1, v0, v1): text [t0, t1) of `row` sees exactly video [v0, v1)


def attention_blocks(text_sample: torch.Tensor, video_sample: torch.Tensor) -> list[Block] | None:
    """Who sees what as blocks: each run of text tokens of one sample sees that sample's video tokens, which must be
    contiguous in the stream (v0 == v1: it sees none); None when some sample's video tokens are not (then the
    mask is used; also on the meta device, which holds no values). text_sample: (B, N) sample per text token;
    video_sample: (B, M), -1 for padding."""
    if text_sample.is_meta:
        return None
    blocks = []
    for row in range(text_sample.shape[0]):
        ranges, pos = {}, 0
        for sample, n in zip(*(t.tolist() for t in torch.unique_consecutive(video_sample[row], return_counts=True))):
            if sample >= 0 and ranges.setdefault(sample, (pos, pos + n)) != (pos, pos + n):
                return None
            pos += n
        pos = 0
        for sample, n in zip(*(t.tolist() for t in torch.unique_consecutive(text_sample[row], return_counts=True))):
            blocks.append((row, pos, pos + n, *ranges.get(sample, (0, 0))))
            pos += n
    return blocks


class VambaCrossAttention(Qwen2VLAttention):
    """Text queries attend to the video tokens of their own sample (non-causal, GQA, SDPA)."""

    def __init__(self, config, layer_idx: int | None = None):
        super().__init__(config, layer_idx)
        self.is_causal = False

    def project_video(
        self,
        video_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the video, computed once per layer and cached for every decoding step.

        Args:
            video_states: (B, M, d) video hidden states entering this layer.
            position_embeddings: optional (cos, sin), each (B, M, head_dim), from the video's (t, h, w) grid.

        Returns:
            keys, values: each (B, kv_heads, M, head_dim).
        """
        bsz, length, _ = video_states.shape
        keys = self.k_proj(video_states).view(bsz, length, -1, self.head_dim).transpose(1, 2)
        values = self.v_proj(video_states).view(bsz, length, -1, self.head_dim).transpose(1, 2)
        if position_embeddings is not None:
            keys = apply_rotary(keys, *position_embeddings)
        return keys, values

    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        video_kv: tuple[torch.Tensor, torch.Tensor],
        visible: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        slices: SliceContext | None = None,
        blocks: list[Block] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend from text to video.

        Args:
            hidden_states: (B, N, d) normalised text hidden states (the same `h` the self-attention sees).
            video_kv: keys and values from `project_video`, each (B, kv_heads, M, head_dim).
            visible: (B, N, M) bool, True where text token n may see video token m (same sample, not padding).
            position_embeddings: optional (cos, sin), each (B, N, head_dim), for the queries.
            slices: when the video is split over a group (context parallel): `video_kv`/`visible` are this slice's,
                and the partial attention is merged with the other slices' through their log-sum-exp (exact).
            blocks: `visible` as `attention_blocks` (mask-free kernel calls), or None to use the mask.

        Returns:
            output: (B, N, d); exactly zero for text tokens that see no video token.
            has_video: (B, N, 1) bool, whether each text token sees any video token.
        """
        bsz, q_len, _ = hidden_states.shape
        query = self.q_proj(hidden_states).view(bsz, q_len, -1, self.head_dim).transpose(1, 2)
        if position_embeddings is not None:
            query = apply_rotary(query, *position_embeddings)
        keys, values = video_kv
        if slices is not None:
            out, lse = attention_with_lse(query, keys, values, visible, self.scaling)
            out, lse = merge_across_slices(slices, out, lse)
            has_video = torch.isfinite(lse[:, 0])[..., None]  # (B, N, 1)
            return self.o_proj(out.transpose(1, 2).reshape(bsz, q_len, -1)), has_video
        has_video = visible.any(-1, keepdim=True)  # (B, N, 1)
        keys, values = keys.to(query.dtype), values.to(query.dtype)
        if blocks is None or all(v1 == v0 for *_, v0, v1 in blocks):  # (no video seen: keys stay in the graph for
            # ZeRO-3 / DDP.) A row seeing no key would give NaN in softmax: it sees everything, then its output is 0.
            out = self._sdpa(query, keys, values, (visible | ~has_video).unsqueeze(1)) * has_video[:, None]
        elif all((t0, t1, v0, v1) == (0, q_len, 0, keys.shape[2]) for _, t0, t1, v0, v1 in blocks):
            out = self._sdpa(query, keys, values)  # every text token sees its row's whole video
        else:
            rows = [[] for _ in range(bsz)]
            for row, t0, t1, v0, v1 in blocks:
                q, r = query[row : row + 1, :, t0:t1], slice(row, row + 1)
                rows[row].append(self._sdpa(q, keys[r, :, v0:v1], values[r, :, v0:v1]) if v1 > v0 else
                                 torch.zeros_like(q))
            out = torch.cat([torch.cat(pieces, dim=2) for pieces in rows])
        return self.o_proj(out.transpose(1, 2).reshape(bsz, q_len, -1)), has_video

    def _sdpa(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
              mask: torch.Tensor | None = None) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            query, keys, values, attn_mask=mask, dropout_p=self.attention_dropout if self.training else 0.0,
            scale=self.scaling, enable_gqa=keys.shape[1] != query.shape[1])
