"""FLOP counting with attention included on every device, and prefill FLOPs counted on the meta device.

`count_flops(fn)`: torch's `FlopCounterMode` on real tensors (a multiply-add counts 2). On CPU torch 2.13
dispatches SDPA to `_scaled_dot_product_flash_attention_for_cpu`, which the counter does not know; we register
torch's own SDPA formula for it, so CPU counts equal meta/CUDA counts.

`prefill_flops(profile, frames)`: Vamba and Qwen2-VL prefill FLOPs at the 7B size in seconds, with no weights and
no memory. How (docs/efficiency.md, "FLOPs"): the vision tower runs one temporal patch (its attention is
block-diagonal per temporal patch) and is scaled by their number; the language models run from embeddings with
two decoder layers and are scaled by their depth (every layer but the last is the same; `breakdown` reads the
first layer's count off the module hierarchy); SDPA calls are counted by torch's formula. Each count is also split
into attention, its causal share and the Mamba-2 scan, for the paper's convention. `tests/test_efficiency.py`
checks the composition against `count_flops` of the real forward.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from torch.utils.module_tracker import ModuleTracker

from vamba.modeling import Mamba2Mixer, VambaForConditionalGeneration
from vamba.modeling.video_stream import VideoStream

from .memory import Profile, VideoGeometry, profile_geometry

_aten = torch.ops.aten
_CPU_SDPA = {
    _aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(
        q, k, v),
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: lambda g, q, k, v, *a, out_shape=None, **kw:
        sdpa_backward_flop_count(g, q, k, v),
}


def flop_counter(display: bool = False) -> FlopCounterMode:
    """A `FlopCounterMode` that also counts CPU SDPA."""
    return FlopCounterMode(display=display, custom_mapping=_CPU_SDPA)


def count_flops(fn: Callable[[], Any]) -> int:
    """Total FLOPs of running `fn()` (forward, and backward if `fn` calls it)."""
    counter = flop_counter()
    with counter:
        fn()
    return counter.get_total_flops()


@dataclass
class FlopBreakdown:
    """FLOPs of a forward: `total` (every op torch counts, SDPA as the full query x key square), its `attention`
    part, what causal kernels compute of it (`attention_causal`), and the Mamba-2 scan's matmuls (`scan`)."""

    total: int = 0
    attention: int = 0
    attention_causal: int = 0
    scan: int = 0

    @property
    def paper(self) -> int:
        """The paper's convention: matmuls outside attention and fused-scan kernels (its counter saw no others)."""
        return self.total - self.attention - self.scan

    @property
    def causal(self) -> int:
        return self.total - self.attention + self.attention_causal

    def __add__(self, other: FlopBreakdown) -> FlopBreakdown:
        return FlopBreakdown(*(a + b for a, b in zip(vars(self).values(), vars(other).values())))

    def scaled(self, k: int) -> FlopBreakdown:
        return FlopBreakdown(*(a * k for a in vars(self).values()))


class MetaCounter(TorchFunctionMode):
    """Counts a forward on meta tensors per module. SDPA is counted with torch's formula and answered with an empty
    output (on meta it would run its math decomposition, indistinguishable from other matmuls)."""

    def __init__(self) -> None:
        super().__init__()
        self.counter, self.tracker = flop_counter(), ModuleTracker()
        self.attention: dict[str, int] = defaultdict(int)
        self.causal: dict[str, int] = defaultdict(int)

    def __enter__(self):
        self.counter.__enter__()
        self.tracker.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self.tracker.__exit__(*exc)
        return self.counter.__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention or args[0].device.type != "meta":
            return func(*args, **kwargs)
        q, k, v = args[:3]
        flops = sdpa_flop_count(q.shape, k.shape, v.shape)
        causal = flops
        if kwargs.get("is_causal") and kwargs.get("attn_mask") is None:  # query i sees keys j <= i
            s_q, s_k = q.shape[-2], k.shape[-2]
            n = min(s_q, s_k)
            causal = flops * (n * (n + 1) // 2 + max(0, s_q - s_k) * s_k) // (s_q * s_k)
        for name in self.tracker.parents:
            self.attention[name] += flops
            self.causal[name] += causal
        return q.new_empty(*q.shape[:-1], v.shape[-1])

    def breakdown(self, module: str = "Global") -> FlopBreakdown:
        """The count of `module` (a fqn such as "VambaTextModel.layers.0"; "Global": everything)."""
        counts = self.counter.get_flop_counts()
        prefix = "" if module == "Global" else module + "."
        scan = sum(n for name, ops in counts.items() if name.startswith(prefix) and name.endswith("vision_mixer.mixer")
                   for op, n in ops.items() if "bmm" in str(op))
        total = sum(counts.get(module, {}).values()) + self.attention[module]
        return FlopBreakdown(total, self.attention[module], self.causal[module], scan)


def _count(fn: Callable[[], Any], layers: int = 0) -> FlopBreakdown:
    """FLOPs of `fn()` on meta; with `layers`, of a 2-layer language model scaled to that depth."""
    counter = MetaCounter()
    with torch.no_grad(), counter:
        fn()
    whole = counter.breakdown()
    first = next((k for k in counter.counter.get_flop_counts() if k.endswith(".layers.0")), None)
    return whole + counter.breakdown(first).scaled(layers - 2) if layers > 2 and first else whole


@dataclass
class PrefillFlops:
    """Prefill FLOPs of one system at one frame count; `lm` is the language model and head."""

    system: str
    frames: int
    visual_tokens: int
    vision: FlopBreakdown
    lm: FlopBreakdown

    @property
    def whole(self) -> FlopBreakdown:
        return self.vision + self.lm


def _meta_model(cls, config, layers: int) -> torch.nn.Module:
    config = copy.deepcopy(config)
    config.text_config.num_hidden_layers = layers
    config.text_config.layer_types = config.text_config.layer_types[:layers]
    with torch.device("meta"):
        return cls(config).eval()


def _vision(visual: torch.nn.Module, geom: VideoGeometry, dtype: torch.dtype) -> FlopBreakdown:
    """The tower over one temporal patch (positions and attention bounds made on the CPU by transformers' helpers,
    as the tower's `.tolist()` cannot run on meta), times the number of temporal patches."""
    from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids

    t, h, w = geom.grid_thw
    one = torch.tensor([[1, h, w]])
    positions = get_vision_position_ids(one, geom.merge).to("meta")
    pixels = torch.empty(h * w, geom.patch_row, dtype=dtype, device="meta")
    return _count(lambda: visual(pixels, grid_thw=one.to("meta"), position_ids=positions,
                                 cu_seqlens=get_vision_cu_seqlens(one))).scaled(t)


def _qwen2vl_lm(model: torch.nn.Module, S: int, layers: int) -> tuple[FlopBreakdown, FlopBreakdown]:
    """Qwen2-VL's language model over its S inline tokens, with the head over the last position and over all."""
    d, dtype = model.config.text_config.hidden_size, model.dtype
    hidden = {}
    body = _count(lambda: hidden.setdefault("h", model.model.language_model(
        inputs_embeds=torch.empty(1, S, d, dtype=dtype, device="meta"),
        position_ids=torch.zeros(3, 1, S, dtype=torch.long, device="meta"), use_cache=True).last_hidden_state),
        layers)
    return tuple(body + _count(lambda h=h: model.lm_head(h)) for h in (hidden["h"][:, -1:], hidden["h"]))


def _vamba_lm(model: torch.nn.Module, M: int, N: int, layers: int) -> FlopBreakdown:
    """Vamba's language model over N text tokens beside an M-token video stream, head over the last position.

    Without autograd the mixer runs in pieces of `inference_piece_len` tokens; every full piece costs the same and
    the rest is linear in M, so with M = r + q p: count(M) = count(r) + q (count(r + p) - count(r)).
    """
    d, dtype = model.config.text_config.hidden_size, model.dtype

    def count(m: int) -> FlopBreakdown:
        ids = torch.zeros(1, m, dtype=torch.long, device="meta")
        stream = VideoStream(states=torch.empty(1, m, d, dtype=dtype, device="meta"), sample_idx=ids,
                             seq_idx=ids.int(), grid_positions=torch.zeros(3, 1, m, dtype=torch.long, device="meta"))
        embeds = torch.empty(1, N, d, dtype=dtype, device="meta")
        return _count(lambda: model.lm_head(model.model.language_model(
            inputs_embeds=embeds, video=stream, use_cache=True).last_hidden_state[:, -1:]), layers)

    p = Mamba2Mixer.inference_piece_len
    r = M % p or p
    q = (M - r) // p
    if q == 0:
        return count(M)
    return count(r).scaled(1 - q) + count(r + p).scaled(q)


def prefill_flops(profile: Profile, frames: list[int], height: int | None = None, width: int | None = None,
                  text_tokens: int | None = None) -> list[PrefillFlops]:
    """Prefill FLOPs of "qwen2vl" (logits for the last position), "qwen2vl_stock" (for every position) and "vamba"
    at every frame count: Qwen2-VL over S = M + T + 3 inline tokens, Vamba over N = T + 3 text tokens beside an
    M-token video stream."""
    from transformers import Qwen2VLForConditionalGeneration

    L = profile.qwen2vl.text_config.num_hidden_layers
    qwen = _meta_model(Qwen2VLForConditionalGeneration, profile.qwen2vl, min(L, 2)).to(profile.dtype)
    vamba = _meta_model(VambaForConditionalGeneration, profile.vamba, min(L, 2)).to(profile.dtype)
    T = profile.text_tokens if text_tokens is None else text_tokens
    tp = profile.qwen2vl.vision_config.temporal_patch_size
    per_temporal_patch = _vision(qwen.model.visual, profile_geometry(profile, tp, height, width), profile.dtype)
    rows = []
    for f in frames:
        geom = profile_geometry(profile, f, height, width)
        vision, M = per_temporal_patch.scaled(geom.grid_thw[0]), geom.tokens
        fair, stock = _qwen2vl_lm(qwen, M + T + 3, L)
        rows += [PrefillFlops("qwen2vl", f, M, vision, fair), PrefillFlops("qwen2vl_stock", f, M, vision, stock),
                 PrefillFlops("vamba", f, M, vision, _vamba_lm(vamba, M, T + 3, L))]
    return rows
