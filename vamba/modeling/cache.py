"""The generation cache of Vamba: text self-attention keys/values plus every layer's video keys/values."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache

from .video_slice import SliceContext


class VambaCache(DynamicCache):
    """Text self-attention KV cache plus, per layer, the cross-attention keys/values of the video.

    The video is processed once at prefill; decoding steps read `video_kv` and never touch the mixer or the
    video projections again. `video_visible` (B, M) says which cached video tokens the next text tokens see.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_args = (args, kwargs)
        self.video_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.video_visible: torch.Tensor | None = None
        self.slices: SliceContext | None = None  # set when the video keys/values are one slice of a group's

    def fork(self) -> VambaCache:
        """A cache with this one's video keys/values (shared, not copied) and no text: one per question, so
        every question about a video reuses its single encoding."""
        args, kwargs = self._init_args
        new = VambaCache(*args, **kwargs)
        new.video_kv = dict(self.video_kv)
        new.video_visible = self.video_visible
        new.slices = self.slices
        return new

    @property
    def has_video(self) -> bool:
        return self.video_visible is not None

    def _map_video(self, fn) -> None:
        self.video_kv = {i: (fn(k), fn(v)) for i, (k, v) in self.video_kv.items()}
        if self.video_visible is not None:
            self.video_visible = fn(self.video_visible)

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._map_video(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._map_video(lambda t: t[indices, ...])

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._map_video(lambda t: t.index_select(0, beam_idx.to(t.device)))
