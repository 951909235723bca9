"""FLOP counting with attention included on every device, and prefill FLOPs counted on the meta device.

`count_flops`: torch's `FlopCounterMode` (a multiply-add counts 2) with torch's SDPA formula registered for the CPU
flash kernel, which torch 2.13's counter reports as 0. `prefill_flops`: both models' prefill at any size in
seconds, without weights or memory, composed as docs/efficiency.md ("FLOPs") explains; tests/test_efficiency.py
checks the composition against `count_flops` of the real forward.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable
from dataclasses import astuple, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from torch.utils.module_tracker import ModuleTracker
from transformers import Qwen2VLForConditionalGeneration
from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids

from vamba.modeling import Mamba2Mixer, VambaForConditionalGeneration
from vamba.modeling.video_stream import VideoStream

from .memory import Profile, profile_geometry

_aten = torch.ops.aten
_CPU_SDPA = {
    _aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *_, out_shape=None, **__: sdpa_flop_count(
        q, k, v),
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: lambda g, q, k, v, *_, out_shape=None, **__:
        sdpa_backward_flop_count(g, q, k, v)}


def flop_counter(display: bool = False) -> FlopCounterMode:
    """A `FlopCounterMode` that also counts CPU SDPA."""
    return FlopCounterMode(display=display, custom_mapping=_CPU_SDPA)


def count_flops(fn: Callable[[], Any]) -> int:
    """Total FLOPs of running `fn()` (forward, and backward if `fn` calls it)."""
    with flop_counter() as counter:
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
        return FlopBreakdown(*(a + b for a, b in zip(astuple(self), astuple(other))))

    def scaled(self, k: int) -> FlopBreakdown:
        return FlopBreakdown(*(a * k for a in astuple(self)))


class MetaCounter(TorchFunctionMode):
    """Counts a forward on meta tensors per module (`breakdown`). SDPA is counted with torch's formula and answered
    with an empty output: on meta it would run its math decomposition, indistinguishable from other matmuls."""

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
        flops = causal = sdpa_flop_count(q.shape, k.shape, v.shape)
        if kwargs.get("is_causal") and kwargs.get("attn_mask") is None:  # query i sees keys j <= i
            s_q, s_k = q.shape[-2], k.shape[-2]
            n = min(s_q, s_k)
            causal = flops * (n * (n + 1) // 2 + max(0, s_q - s_k) * s_k) // (s_q * s_k)
        for name in self.tracker.parents:
            self.attention[name] += flops
            self.causal[name] += causal
        return q.new_empty(*q.shape[:-1], v.shape[-1])

    def breakdown(self, module: str = "Global") -> FlopBreakdown:
        """The count of `module`, a fqn such as "VambaTextModel.layers.0" ("Global": everything)."""
        counts = self.counter.get_flop_counts()
        prefix = "" if module == "Global" else module + "."
        scan = sum(n for name, ops in counts.items() if name.startswith(prefix) and name.endswith("vision_mixer.mixer")
                   for op, n in ops.items() if "bmm" in str(op))
        total = sum(counts.get(module, {}).values()) + self.attention[module]
        return FlopBreakdown(total, self.attention[module], self.causal[module], scan)


def _count(fn: Callable[[], Any], layers: int = 0) -> FlopBreakdown:
    """FLOPs of `fn()` on meta; with `layers`, of a 2-layer language model scaled to that depth: every layer but
    the last is the same, so the count plus (layers - 2) times the first layer's."""
    with torch.no_grad(), MetaCounter() as counter:
        fn()
    first = next((k for k in counter.counter.get_flop_counts() if k.endswith(".layers.0")), None)
    return counter.breakdown() + (counter.breakdown(first).scaled(layers - 2) if layers > 2 else FlopBreakdown())


@dataclass
class PrefillFlops:
    """Prefill FLOPs of one system at one frame count; `lm`: the language model and head."""

    system: str
    frames: int
    visual_tokens: int
    vision: FlopBreakdown
    lm: FlopBreakdown

    @property
    def whole(self) -> FlopBreakdown:
        return self.vision + self.lm


def _meta_model(cls: type, config, layers: int) -> torch.nn.Module:
    config = copy.deepcopy(config)
    config.text_config.num_hidden_layers = layers
    config.text_config.layer_types = config.text_config.layer_types[:layers]
    with torch.device("meta"):
        return cls(config).eval()


def _qwen2vl_lm(model: torch.nn.Module, S: int, layers: int) -> tuple[FlopBreakdown, FlopBreakdown]:
    """Qwen2-VL's language model over S inline tokens; with the head over the last position, and over all."""
    d, meta = model.config.text_config.hidden_size, {"device": "meta"}
    hidden = {}
    body = _count(lambda: hidden.setdefault("h", model.model.language_model(
        inputs_embeds=torch.empty(1, S, d, dtype=model.dtype, **meta), use_cache=True,
        position_ids=torch.zeros(3, 1, S, dtype=torch.long, **meta)).last_hidden_state), layers)
    return tuple(body + _count(lambda h=h: model.lm_head(h)) for h in (hidden["h"][:, -1:], hidden["h"]))


def _vamba_lm(model: torch.nn.Module, M: int, N: int, layers: int) -> FlopBreakdown:
    """Vamba's language model over N text tokens beside an M-token video stream, head over the last position.
    Without autograd the mixer runs in pieces of p tokens; all full pieces cost the same and the rest is linear
    in M, so with M = r + q p: count(M) = count(r) + q (count(r + p) - count(r))."""
    d, meta = model.config.text_config.hidden_size, {"device": "meta"}

    def count(m: int) -> FlopBreakdown:
        ids = torch.zeros(1, m, dtype=torch.long, **meta)
        stream = VideoStream(torch.empty(1, m, d, dtype=model.dtype, **meta), ids, None,
                             torch.zeros(3, 1, m, dtype=torch.long, **meta))
        embeds = torch.empty(1, N, d, dtype=model.dtype, **meta)
        return _count(lambda: model.lm_head(model.model.language_model(
            inputs_embeds=embeds, video=stream, use_cache=True).last_hidden_state[:, -1:]), layers)

    p = next(m for m in model.modules() if isinstance(m, Mamba2Mixer)).piece_len("meta")
    r = M % p or p
    q = (M - r) // p
    return count(M) if q == 0 else count(r).scaled(1 - q) + count(r + p).scaled(q)


def prefill_flops(profile: Profile, frames: list[int], height: int | None = None, width: int | None = None,
                  text_tokens: int | None = None) -> list[PrefillFlops]:
    """Prefill FLOPs of "qwen2vl" (logits for the last position), "qwen2vl_stock" (for every position) and "vamba"
    at every frame count: Qwen2-VL over S = M + T + 3 inline tokens, Vamba over N = T + 3 text tokens beside M
    video tokens. The vision tower runs one temporal patch (positions and attention bounds made on the CPU: its
    `.tolist()` cannot run on meta) and is scaled by their number: its attention stays within a temporal patch."""
    L = profile.qwen2vl.text_config.num_hidden_layers
    qwen = _meta_model(Qwen2VLForConditionalGeneration, profile.qwen2vl, min(L, 2)).to(profile.dtype)
    vamba = _meta_model(VambaForConditionalGeneration, profile.vamba, min(L, 2)).to(profile.dtype)
    T = profile.text_tokens if text_tokens is None else text_tokens
    geom = profile_geometry(profile, profile.qwen2vl.vision_config.temporal_patch_size, height, width)
    one = torch.tensor([[1, *geom.grid_thw[1:]]])
    pixels = torch.empty(geom.patches, geom.patch_row, dtype=profile.dtype, device="meta")
    per_temporal_patch = _count(lambda: qwen.model.visual(pixels, grid_thw=one.to("meta"), cu_seqlens=(
        get_vision_cu_seqlens(one)), position_ids=get_vision_position_ids(one, geom.merge).to("meta")))
    rows = []
    for f in frames:
        geom = profile_geometry(profile, f, height, width)
        vision, M = per_temporal_patch.scaled(geom.grid_thw[0]), geom.tokens
        fair, stock = _qwen2vl_lm(qwen, M + T + 3, L)
        rows += [PrefillFlops("qwen2vl", f, M, vision, fair), PrefillFlops("qwen2vl_stock", f, M, vision, stock),
                 PrefillFlops("vamba", f, M, vision, _vamba_lm(vamba, M, T + 3, L))]
    return rows
