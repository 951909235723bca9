"""`vamba bench`: prefill FLOPs, memory and time of Vamba against Qwen2-VL of the same size (paper figures 3-4).

Three kinds of numbers, kept apart because they answer different questions (DESIGN.md section 5):

1. FLOPs, counted on the META device (no weights, no memory: the 7B models are built under
   `torch.device("meta")` and run in seconds on a laptop) with torch's `FlopCounterMode` (a multiply-add = 2),
   reported in two conventions:
   (a) all FLOPs, attention included (as torch counts SDPA: every query against every key; a causal kernel
       computes only the lower triangle, so we also give the "causal-effective" count), for the whole prefill
       (vision tower included) and for the language model alone;
   (b) the paper's convention: matrix multiplies outside attention kernels only. The paper's counter could not
       see flash-attention (nor mamba_ssm's fused scan), so we exclude every SDPA call and the Mamba-2 SSD
       scan's matmuls (reported separately: a few percent of Vamba's count).
   How the meta count works (see `prefill_flops`): the vision tower runs one temporal patch with its grid
   position ids and attention boundaries precomputed on the CPU by transformers' own helpers (the tower calls
   `.tolist()` on them, impossible on meta) and is scaled by the number of temporal patches, which is exact
   because Qwen2-VL's tower attends only within a temporal patch and is otherwise per-patch; the language
   models run on meta from the visual embeddings (Qwen2-VL: the full inline sequence; Vamba: the text plus a
   video stream); SDPA calls are counted with torch's own SDPA formula instead of being decomposed; repeated
   Mamba-2 pieces with identical shapes are counted once and replayed. `tests/test_efficiency.py` checks that
   this composition equals `count_flops` of the real forward on CPU at the tiny size.
2. Memory: the analytic account of `vamba.efficiency.memory`, and on the machine at hand the measured peak: on
   CPU the peak RSS increase of a fresh subprocess (Linux's VmHWM reset through /proc/self/clear_refs after the
   model, the inputs and a warm-up pass exist; glibc's mmap threshold pinned at 64 KiB so freed tensors go back
   to the OS and RSS follows the live set); on CUDA `torch.cuda.max_memory_allocated` over the same baseline.
   `tracemalloc` would not see torch's allocations at all.
3. Wall time of the prefill (and optionally one training step) in the same subprocess.

Systems: "qwen2vl" (fair baseline: video pad tokens inline, `mm_token_type_ids`, `logits_to_keep=1`),
"qwen2vl_stock" (logits for every position, as the stock forward returns them), "vamba" (full prefill), and
"vamba_stream" (`encode_video(..., chunk_frames=K)` then the prompt against the cached video keys/values).

`main(argv)` is the `vamba bench` command (`python -m vamba.efficiency.bench --help`). Outputs go to `--out`
(default outputs/bench/<model>): results.csv, memory.png, flops.png, time.png; markdown tables are printed.
Measurements predicted (memory account, or time extrapolated with FLOPs) to exceed `--max-gb`/`--max-seconds`
are skipped and marked "skipped (limit)", so Qwen2-VL's quadratic prefill cannot hang the machine;
`--stream-demo` then runs Vamba's streaming prefill at 2x and 4x the most frames Qwen2-VL managed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import sdpa_flop_count

from .configs import PROFILES, Profile, get_profile_config
from .flops import flop_counter
from .memory import SYSTEMS, MemoryAccount, VideoGeometry, memory_account, profile_geometry

REPO_ROOT = Path(__file__).resolve().parents[2]
MEASURED_SYSTEMS = ("qwen2vl", "vamba", "vamba_stream")
LABELS = {
    "qwen2vl": "Qwen2-VL (logits_to_keep=1)",
    "qwen2vl_stock": "Qwen2-VL stock (all logits)",
    "vamba": "Vamba",
    "vamba_stream": "Vamba streaming",
}
COLORS = {"qwen2vl": "tab:blue", "qwen2vl_stock": "tab:cyan", "vamba": "tab:red", "vamba_stream": "tab:orange"}

# The paper's figures 3 and 4 (A800 80GB, 7B, 640x360 frames), as read off the plots (DESIGN.md section 5).
# frames -> (Qwen2-VL, Vamba); None = out of memory.
PAPER_PREFILL_TFLOPS = {16: (51.7, 31.0), 64: (189.7, 100.0), 128: (372.4, 193.1), 256: (744.2, 379.3),
                        512: (None, 751.7), 1024: (None, 1489.7)}
PAPER_PREFILL_MEMORY_GB = {16: (19.2, 23.0), 64: (27.3, 25.0), 128: (38.4, 27.8), 256: (60.4, 33.4),
                           512: (None, 44.7), 1024: (None, 67.3)}
PAPER_TRAIN_MEMORY_GB = {16: (50.3, 44.4), 64: (67.0, 46.5), 128: (75.2, 52.8), 256: (None, 65.8),
                         512: (None, 76.5)}
PAPER_TRAIN_STEP_S = {16: (2.0, 2.01), 64: (5.58, 3.10), 128: (11.83, 5.02), 256: (None, 9.43), 512: (None, 16.1)}
# Vamba / Qwen2-VL FLOP ratios stated in DESIGN.md section 5 (attention counted).
DESIGN_LM_RATIO = {256: 0.235, 512: 0.171, 1024: 0.111}
DESIGN_WHOLE_RATIO = {256: 0.40, 512: 0.31, 1024: 0.22}
DESIGN_FIGURE_RATIO = 0.5


def _log(msg: str) -> None:
    print(msg, flush=True)


# ================================================================================================================
# FLOPs on the meta device
# ================================================================================================================


@dataclass
class FlopBreakdown:
    """FLOPs of one part of a forward (a multiply-add counts 2).

    Attributes:
        total: every matmul-like op torch's counter knows (linear, conv, bmm) plus SDPA as torch counts it (the
            full query x key square, whatever the mask).
        attention: the SDPA part of `total` (scores and weighted values).
        attention_causal: what causal kernels actually compute of it (key <= query pairs for causal calls;
            non-causal calls count in full).
        scan: the Mamba-2 SSD scan's matmuls inside `total` (inside mamba_ssm's fused kernel on GPU).
    """

    total: int = 0
    attention: int = 0
    attention_causal: int = 0
    scan: int = 0

    @property
    def paper(self) -> int:
        """The paper's convention: matmuls outside attention (and fused-scan) kernels."""
        return self.total - self.attention - self.scan

    @property
    def causal(self) -> int:
        """All FLOPs with causal attention counted as computed (lower triangle)."""
        return self.total - self.attention + self.attention_causal

    def __add__(self, other: FlopBreakdown) -> FlopBreakdown:
        return FlopBreakdown(self.total + other.total, self.attention + other.attention,
                             self.attention_causal + other.attention_causal, self.scan + other.scan)

    def scaled(self, k: int) -> FlopBreakdown:
        return FlopBreakdown(self.total * k, self.attention * k, self.attention_causal * k, self.scan * k)


def _sdpa_arguments(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any, bool]:
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal")
    bound = dict(zip(names, args))
    bound.update({k: v for k, v in kwargs.items() if k in names})
    return bound["query"], bound["key"], bound["value"], bound.get("attn_mask"), bool(bound.get("is_causal", False))


class _MetaCounter(TorchFunctionMode):
    """Counts a forward on the meta device: torch's FlopCounterMode for every op, plus two shortcuts.

    - `F.scaled_dot_product_attention` is counted with torch's SDPA formula (`sdpa_flop_count`, what
      FlopCounterMode charges the fused CUDA/CPU kernels) and answered with an empty output of the right shape.
      On meta, SDPA would otherwise run its math decomposition (slow, and indistinguishable from other matmuls).
    - `Mamba2Mixer._forward_torch` calls repeat with identical shapes (every layer, every 4096-token piece):
      the first call of a shape is counted for real, later ones replay its count. The split between the scan
      (aten.bmm: the SSD einsums are the mixer's only bmm) and the projections is taken from the real call.

    Only ever used on meta tensors, where values do not exist, so skipping a computation changes nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counter = flop_counter()
        self.attention = 0
        self.attention_causal = 0
        self.replayed = 0
        self.scan = 0
        self._memo: dict[tuple, tuple[int, int, torch.Size, torch.dtype]] = {}
        self._stack = contextlib.ExitStack()

    def __enter__(self):
        from vamba.modeling.mamba2 import Mamba2Mixer

        original = Mamba2Mixer._forward_torch
        counter_self = self

        def forward_torch(mixer, hidden_states, seq_idx, state):
            if hidden_states.device.type != "meta":
                return original(mixer, hidden_states, seq_idx, state)
            key = (tuple(hidden_states.shape), hidden_states.dtype, seq_idx is None, state is None,
                   tuple((n, tuple(p.shape)) for n, p in mixer.named_parameters()), mixer.chunk_size)
            if key in counter_self._memo:
                flops, scan, shape, dtype = counter_self._memo[key]
                counter_self.replayed += flops
                counter_self.scan += scan
                return torch.empty(shape, dtype=dtype, device="meta")
            before = counter_self.counter.get_flop_counts().get("Global", {})
            out = original(mixer, hidden_states, seq_idx, state)
            after = counter_self.counter.get_flop_counts().get("Global", {})
            flops = sum(after.values()) - sum(before.values())
            scan = sum(v - before.get(op, 0) for op, v in after.items() if "bmm" in str(op))
            counter_self.scan += scan
            counter_self._memo[key] = (flops, scan, out.shape, out.dtype)
            return out

        Mamba2Mixer._forward_torch = forward_torch
        self._stack.callback(setattr, Mamba2Mixer, "_forward_torch", original)
        self._stack.enter_context(self.counter)
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self._stack.close()
        return False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k, v, mask, is_causal = _sdpa_arguments(args, kwargs)
            if q.device.type == "meta":
                flops = sdpa_flop_count(q.shape, k.shape, v.shape)
                self.attention += flops
                s_q, s_k = q.shape[-2], k.shape[-2]
                if is_causal and mask is None:  # torch's is_causal: query i sees keys j <= i (top-left aligned)
                    n = min(s_q, s_k)
                    pairs = n * (n + 1) // 2 + max(0, s_q - s_k) * s_k
                    self.attention_causal += flops * pairs // (s_q * s_k)
                else:
                    self.attention_causal += flops
                return q.new_empty(*q.shape[:-1], v.shape[-1])
        return func(*args, **kwargs)

    def result(self) -> FlopBreakdown:
        total = self.counter.get_total_flops() + self.replayed + self.attention
        return FlopBreakdown(total, self.attention, self.attention_causal, self.scan)


def count_on_meta(fn: Callable[[], Any]) -> FlopBreakdown:
    """FLOPs of `fn()`, which must run on meta tensors (see `_MetaCounter`)."""
    counter = _MetaCounter()
    with torch.no_grad(), counter:
        fn()
    return counter.result()


@dataclass
class PrefillFlops:
    """Prefill FLOPs of one system at one frame count; `lm` excludes the vision tower and includes the head."""

    system: str
    frames: int
    visual_tokens: int
    vision: FlopBreakdown
    lm: FlopBreakdown

    @property
    def whole(self) -> FlopBreakdown:
        return self.vision + self.lm


def build_meta_models(profile: Profile) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Qwen2-VL and Vamba of the profile's size on the meta device (in the profile's dtype), eval mode."""
    from transformers import Qwen2VLForConditionalGeneration

    from vamba import VambaForConditionalGeneration

    with torch.device("meta"):
        qwen = Qwen2VLForConditionalGeneration(profile.qwen2vl).to(profile.dtype).eval()
        vamba = VambaForConditionalGeneration(profile.vamba).to(profile.dtype).eval()
    return qwen, vamba


def vision_flops(visual: torch.nn.Module, geom: VideoGeometry, dtype: torch.dtype) -> FlopBreakdown:
    """FLOPs of the vision tower (patch embedding, blocks, merger) over the whole video.

    One temporal patch is run on meta, its rotary positions and attention boundaries computed on the CPU by
    transformers' helpers and handed in as precomputed kwargs; the count is multiplied by the number of temporal
    patches. Exact: the tower's attention is block-diagonal per temporal patch (`cu_seqlens`) and every other op
    acts per patch or per merged token.
    """
    from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids

    t, h, w = geom.grid_thw
    one = torch.tensor([[1, h, w]])
    positions = get_vision_position_ids(one, geom.merge).to("meta")
    cu_seqlens = get_vision_cu_seqlens(one)  # stays on CPU: the SDPA path splits by `.tolist()` of it
    pixels = torch.empty(h * w, geom.patch_row, dtype=dtype, device="meta")
    per_patch = count_on_meta(lambda: visual(pixels, grid_thw=one.to("meta"), position_ids=positions,
                                             cu_seqlens=cu_seqlens))
    return per_patch.scaled(t)


def qwen2vl_lm_flops(model: torch.nn.Module, visual_tokens: int, text_tokens: int, all_logits: bool
                     ) -> FlopBreakdown:
    """Language model + head of Qwen2-VL over its inline sequence S = M + T + 3 (bos, vision start, M video
    pads, vision end, T prompt tokens) with 3-D positions; head over every position or the last only."""
    cfg = model.config.text_config
    S = visual_tokens + text_tokens + 3
    embeds = torch.empty(1, S, cfg.hidden_size, dtype=model.dtype, device="meta")
    positions = torch.zeros(3, 1, S, dtype=torch.long, device="meta")

    def run():
        hidden = model.model.language_model(inputs_embeds=embeds, position_ids=positions, use_cache=True)
        model.lm_head(hidden.last_hidden_state if all_logits else hidden.last_hidden_state[:, -1:])

    return count_on_meta(run)


def vamba_lm_flops(model: torch.nn.Module, visual_tokens: int, text_tokens: int) -> FlopBreakdown:
    """Language model + head of Vamba: the text N = T + 3 (bos, the two markers, T prompt tokens) beside a video
    stream of M tokens (cross-attention keys/values, Mamba-2 on the video); logits for the last position."""
    from vamba.modeling.video_stream import VideoStream

    cfg = model.config.text_config
    M, N = visual_tokens, text_tokens + 3
    embeds = torch.empty(1, N, cfg.hidden_size, dtype=model.dtype, device="meta")
    zeros = torch.zeros(1, M, dtype=torch.long, device="meta")
    stream = VideoStream(states=torch.empty(1, M, cfg.hidden_size, dtype=model.dtype, device="meta"),
                         sample_idx=zeros, seq_idx=zeros.int(),
                         grid_positions=torch.zeros(3, 1, M, dtype=torch.long, device="meta"))

    def run():
        hidden = model.model.language_model(inputs_embeds=embeds, video=stream, use_cache=True)
        model.lm_head(hidden.last_hidden_state[:, -1:])

    return count_on_meta(run)


def prefill_flops(profile: Profile, frames: list[int], height: int | None = None, width: int | None = None,
                  text_tokens: int | None = None, progress: bool = False) -> list[PrefillFlops]:
    """Prefill FLOPs of "qwen2vl", "qwen2vl_stock" and "vamba" at every frame count, counted on meta."""
    qwen, vamba = build_meta_models(profile)
    T = profile.text_tokens if text_tokens is None else text_tokens
    rows: list[PrefillFlops] = []
    vision_cache: dict[tuple, FlopBreakdown] = {}
    for f in frames:
        t0 = time.perf_counter()
        geom = profile_geometry(profile, f, height, width)
        key = (geom.grid_thw[1:], geom.resized_height, geom.resized_width)
        if key not in vision_cache:  # per temporal patch: identical for every frame count
            one = profile_geometry(profile, profile.qwen2vl.vision_config.temporal_patch_size, height, width)
            vision_cache[key] = vision_flops(qwen.model.visual, one, profile.dtype)
        vision = vision_cache[key].scaled(geom.grid_thw[0])
        M = geom.tokens
        rows.append(PrefillFlops("qwen2vl", f, M, vision, qwen2vl_lm_flops(qwen, M, T, all_logits=False)))
        rows.append(PrefillFlops("qwen2vl_stock", f, M, vision, qwen2vl_lm_flops(qwen, M, T, all_logits=True)))
        rows.append(PrefillFlops("vamba", f, M, vision, vamba_lm_flops(vamba, M, T)))
        if progress:
            _log(f"  counted FLOPs at {f} frames ({M} visual tokens) in {time.perf_counter() - t0:.1f} s")
    return rows


# ================================================================================================================
# Measurement (one fresh subprocess per measurement)
# ================================================================================================================


def _token_ids(config) -> dict[str, int]:
    """Special-token ids of a Qwen2-VL/Vamba config (the 7B/small profiles use Qwen's, tiny uses the tiny ones)."""
    text = config.text_config
    bos = text.bos_token_id if text.bos_token_id is not None else config.vision_start_token_id
    return {"bos": bos, "start": config.vision_start_token_id, "end": config.vision_end_token_id,
            "video": config.video_token_id}


def build_inputs(profile: Profile, system: str, geom: VideoGeometry, text_tokens: int, device: str,
                 dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Random prefill inputs in each model's own layout.

    Qwen2-VL: `[bos, vision_start, M x video_pad, vision_end, T prompt]` with `mm_token_type_ids` 2 on the pads
    (what its processor makes). Vamba: `[bos, vision_start, vision_end, T prompt]`; the video is a separate
    stream. Pixels: (P, channels x temporal_patch x patch^2) in the model dtype, as the processor's output
    after `.to(dtype)`, so the models make no conversion copy.
    """
    from vamba.modeling.tiny import random_video

    config = profile.qwen2vl if system.startswith("qwen2vl") else profile.vamba
    ids = _token_ids(config)
    if torch.device(device).type == "cpu":
        gen = torch.Generator().manual_seed(0)
        pixels, grid = random_video(config, geom.frames, geom.resized_height, geom.resized_width, generator=gen)
        pixels = pixels.to(dtype=dtype)
    else:  # an hour of video is gigabytes of pixels: draw them on the device, in the model dtype
        gen = torch.Generator(device=device).manual_seed(0)
        pixels = torch.randn(geom.patches, geom.patch_row, generator=gen, device=device, dtype=dtype)
        grid = torch.tensor([list(geom.grid_thw)])
    grid = grid.to(device)
    prompt = [7 + (i % 50) for i in range(text_tokens)]
    M = geom.tokens
    if system.startswith("qwen2vl"):
        input_ids = torch.tensor([[ids["bos"], ids["start"]] + [ids["video"]] * M + [ids["end"]] + prompt])
        types = torch.zeros_like(input_ids)
        types[0, 2 : 2 + M] = 2
        return {"input_ids": input_ids.to(device), "mm_token_type_ids": types.to(device),
                "pixel_values_videos": pixels, "video_grid_thw": grid}
    input_ids = torch.tensor([[ids["bos"], ids["start"], ids["end"]] + prompt])
    return {"input_ids": input_ids.to(device), "pixel_values_videos": pixels, "video_grid_thw": grid}


def run_prefill(model: torch.nn.Module, system: str, inputs: dict[str, torch.Tensor], chunk_frames: int) -> Any:
    """One inference prefill (no autograd) as generation would run it; returns what it produced (logits and
    caches), which a caller keeps alive so that they count in the measured peak."""
    with torch.no_grad():
        if system == "qwen2vl_stock":
            return model(**inputs, use_cache=True)  # logits_to_keep=0: the stock forward's logits for every position
        if system in ("qwen2vl", "vamba"):
            return model(**inputs, use_cache=True, logits_to_keep=1)
        if system == "vamba_stream":
            cache = model.encode_video(inputs["pixel_values_videos"], inputs["video_grid_thw"],
                                       chunk_frames=chunk_frames)
            return model(input_ids=inputs["input_ids"], past_key_values=cache, use_cache=True, logits_to_keep=1)
    raise ValueError(f"unknown system {system!r}")


def run_train_step(model: torch.nn.Module, system: str, inputs: dict[str, torch.Tensor]) -> float:
    """One training step's forward + backward (LM loss on the prompt tokens, gradient checkpointing on, as the
    paper trains); returns the loss. The optimizer step is not included (its memory is the optimizer state)."""
    labels = inputs["input_ids"].clone()
    if system.startswith("qwen2vl"):
        labels[inputs["mm_token_type_ids"] != 0] = -100
    out = model(**inputs, labels=labels, use_cache=False)
    out.loss.backward()
    return float(out.loss)


def _proc_status_kb(field_name: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else None


def _reset_peak_rss() -> bool:
    """Reset Linux's peak-RSS mark (VmHWM) to the current RSS; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def peak_memory(device: str) -> Iterator[dict[str, Any]]:
    """Measure the peak memory increase of the block, in bytes, into the yielded dict ("peak_bytes", "method").

    CUDA: `torch.cuda.max_memory_allocated` above the allocation at entry (tensor bytes, as the paper's figure).
    CPU: peak resident set size above the RSS at entry. The peak mark is reset at entry (/proc/self/clear_refs),
    so only this block's peak counts; without that (non-Linux) the process's lifetime peak is used, an upper
    bound. RSS is the memory the OS gives the process: tensors plus the scratch of single kernels plus allocator
    slack; run with MALLOC_MMAP_THRESHOLD_ set (the bench's subprocesses do) so freed tensors are returned.
    """
    result: dict[str, Any] = {}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        yield result
        torch.cuda.synchronize()
        result.update(peak_bytes=torch.cuda.max_memory_allocated() - base, method="cuda max_memory_allocated")
        return
    gc.collect()
    base_kb = _proc_status_kb("VmRSS")
    exact = _reset_peak_rss()
    if base_kb is None:  # not Linux: fall back to the lifetime peak
        import resource

        base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        exact = False
    yield result
    peak_kb = _proc_status_kb("VmHWM")
    if peak_kb is None:
        import resource

        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result.update(peak_bytes=(peak_kb - base_kb) * 1024,
                  method="cpu peak RSS increase" + ("" if exact else " (lifetime peak: upper bound)"))


_MODEL_CACHE: dict[tuple, torch.nn.Module] = {}


def _model_for(profile: Profile, system: str, device: str, train: bool) -> torch.nn.Module:
    """The randomly initialised model a measurement runs (memory and time do not depend on weight values),
    reused by later measurements of the same kind in a batch."""
    from transformers import Qwen2VLForConditionalGeneration

    from vamba import VambaForConditionalGeneration

    kind = "qwen2vl" if system.startswith("qwen2vl") else "vamba"
    key = (profile.name, kind, device, train)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()  # one model at a time: a batch is ordered by kind
        gc.collect()
        torch.manual_seed(0)
        cls = Qwen2VLForConditionalGeneration if kind == "qwen2vl" else VambaForConditionalGeneration
        model = cls(profile.qwen2vl if kind == "qwen2vl" else profile.vamba).to(device=device, dtype=profile.dtype)
        model.train(train)
        if train:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        _MODEL_CACHE[key] = model
        # Move the interpreter's long-lived objects (modules, the model) out of the collector's reach: the
        # gc.collect() before each baseline then takes milliseconds instead of half a second.
        gc.collect()
        gc.freeze()
    return _MODEL_CACHE[key]


def measure_in_process(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the model and inputs of `spec`, warm up, then time the prefill (or train step) and measure its peak.

    spec keys: profile, system, frames, height, width, chunk_frames, text_tokens, device, train (bool), threads
    (CPU intra-op threads; default torch's).
    The warm-up runs the same path on one temporal patch so that lazily created kernels, thread pools and
    caches exist before the baseline is taken; the baseline includes the model and the inputs.
    """
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    profile = get_profile_config(spec["profile"])
    system, device, train = spec["system"], spec.get("device", "cpu"), bool(spec.get("train"))
    dtype = profile.dtype
    model = _model_for(profile, system, device, train)
    text_tokens = spec.get("text_tokens") or profile.text_tokens

    def inputs_for(frames: int) -> dict[str, torch.Tensor]:
        geom = profile_geometry(profile, frames, spec.get("height"), spec.get("width"))
        return build_inputs(profile, system, geom, text_tokens, device, dtype)

    def step(inputs):
        if train:
            return run_train_step(model, system, inputs)
        return run_prefill(model, system, inputs, spec.get("chunk_frames") or 32)

    tp = profile.qwen2vl.vision_config.temporal_patch_size
    warm = inputs_for(tp)
    step(warm)
    model.zero_grad(set_to_none=True)
    del warm
    inputs = inputs_for(spec["frames"])
    gc.collect()
    with peak_memory(device) as mem:
        start = time.perf_counter()
        out = step(inputs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    del out, inputs
    model.zero_grad(set_to_none=True)
    gc.collect()
    return {"status": "ok", "seconds": seconds, "peak_gb": mem["peak_bytes"] / 1e9, "method": mem["method"],
            "threads": torch.get_num_threads()}


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    # Serve every allocation of 64 KiB or more with mmap and unmap it when freed (glibc otherwise raises its mmap
    # threshold adaptively and keeps freed memory in the heap), so that RSS follows the live tensors.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    return env


def measure_batch(specs: list[dict[str, Any]], timeout_s: float | None = None) -> list[dict[str, Any]]:
    """Run `measure_in_process` for each spec, in order, in ONE fresh Python subprocess.

    A fresh process gives a clean allocator and a clean peak, and a crash or an out-of-memory kill only loses
    its own measurements (those not reported get status "failed ..."/"timeout"). Several specs in one process
    share the interpreter start-up and the model (each still takes its own baseline after its own warm-up;
    with the pinned mmap threshold freed tensors leave RSS, so earlier measurements do not hide later ones).
    `vamba bench` uses one spec per process unless told otherwise.
    """
    cmd = [sys.executable, "-m", "vamba.efficiency.bench", "--worker", json.dumps(specs)]
    results: list[dict[str, Any]] = []
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=_worker_env(),
                              cwd=REPO_ROOT)
        stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
        lost = "failed (killed: out of memory?)" if code in (-9, 137) else f"failed (exit {code})"
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr, lost = "", "timeout"
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            results.append(json.loads(line[len("RESULT "):]))
    while len(results) < len(specs):
        results.append({"status": lost, "error": (stderr or stdout)[-1500:]})
    return results


def measure(spec: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
    """One measurement in its own fresh subprocess (see `measure_batch`)."""
    return measure_batch([spec], timeout_s)[0]


# ================================================================================================================
# The benchmark: rows, limits, tables, CSV, plots
# ================================================================================================================


@dataclass
class Row:
    """One (system, frames) point: FLOPs (meta count), the memory account, and what was measured."""

    profile: str
    system: str
    frames: int
    visual_tokens: int
    height: int
    width: int
    chunk_frames: int | None = None
    flops: PrefillFlops | None = None
    account: MemoryAccount | None = None
    account_upcast: MemoryAccount | None = None  # stock logits + their float32 copy (the paper's transformers)
    status: str = "not measured"
    seconds: float | None = None
    peak_gb: float | None = None
    method: str = ""
    train_status: str = "not measured"
    train_seconds: float | None = None
    train_peak_gb: float | None = None

    def csv_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "profile": self.profile, "system": self.system, "frames": self.frames,
            "visual_tokens": self.visual_tokens, "height": self.height, "width": self.width,
            "chunk_frames": self.chunk_frames if self.system == "vamba_stream" else "",
        }
        f = self.flops
        for name, value in (  # exact counts (FLOPs, a multiply-add = 2)
            ("flops_whole", f and f.whole.total), ("flops_whole_causal", f and f.whole.causal),
            ("flops_lm", f and f.lm.total), ("flops_lm_causal", f and f.lm.causal),
            ("flops_vision", f and f.vision.total), ("flops_attention", f and f.whole.attention),
            ("flops_scan", f and f.whole.scan), ("flops_paper_convention", f and f.whole.paper),
        ):
            rec[name] = "" if value is None else int(value)
        a = self.account
        for name, value in (
            ("account_peak_gb", a and a.peak_gb), ("account_total_gb", a and a.total_gb),
            ("account_weights_gb", a and a.weights_gb), ("account_kv_cache_gb", a and a.kv_cache_gb),
            ("account_logits_gb", a and a.logits_gb), ("account_activations_gb", a and a.activations_gb),
        ):
            rec[name] = "" if value is None else round(value, 6)
        rec["account_peak_phase"] = a.peak_phase if a else ""
        rec["account_total_gb_logits_upcast"] = round(self.account_upcast.total_gb, 4) if self.account_upcast else ""
        rec["status"] = self.status
        rec["time_s"] = "" if self.seconds is None else round(self.seconds, 3)
        rec["peak_gb"] = "" if self.peak_gb is None else round(self.peak_gb, 6)
        rec["method"] = self.method
        rec["train_status"] = self.train_status
        rec["train_time_s"] = "" if self.train_seconds is None else round(self.train_seconds, 3)
        rec["train_peak_gb"] = "" if self.train_peak_gb is None else round(self.train_peak_gb, 6)
        return rec


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.3f}"


def _tf(x: int | float | None) -> str:
    """TFLOPs with at least 3 significant digits."""
    if x is None:
        return "-"
    t = x / 1e12
    return f"{t:,.1f}" if t >= 100 else f"{t:.4g}"


def _gb(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}" if x < 10 else f"{x:.1f}"


def _markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def flops_tables(rows: list[Row], paper: bool) -> str:
    """Markdown: FLOPs with attention (whole prefill and LM), the paper's convention, and (`paper`: at the
    paper's 7B size) the paper's values and DESIGN.md's ratio claims next to ours."""
    by = {(r.system, r.frames): r for r in rows if r.flops is not None}
    frames = sorted({f for _, f in by})
    out = []
    t1 = []
    for f in frames:
        q, v = by[("qwen2vl", f)].flops, by[("vamba", f)].flops
        t1.append([str(f), str(q.visual_tokens), _tf(q.whole.total), _tf(v.whole.total),
                   _ratio(v.whole.total, q.whole.total), _ratio(v.whole.causal, q.whole.causal),
                   _tf(q.lm.total), _tf(v.lm.total), _ratio(v.lm.total, q.lm.total),
                   _ratio(v.lm.causal, q.lm.causal)])
    out.append("Prefill TFLOPs, all FLOPs incl. attention (Qwen2-VL fair: logits_to_keep=1). 'causal' counts "
               "causal self-attention as computed (lower triangle) instead of torch's full square.\n")
    out.append(_markdown(["frames", "visual tokens", "Qwen2-VL whole", "Vamba whole", "ratio", "ratio causal",
                          "Qwen2-VL LM", "Vamba LM", "LM ratio", "LM ratio causal"], t1))
    t2 = []
    for f in frames:
        q, qs, v = by[("qwen2vl", f)].flops, by[("qwen2vl_stock", f)].flops, by[("vamba", f)].flops
        cells = [str(f), _tf(qs.whole.paper), _tf(q.whole.paper), _tf(v.whole.paper),
                 _tf(v.whole.paper + v.whole.scan), _ratio(v.whole.paper, qs.whole.paper),
                 _ratio(v.whole.paper, q.whole.paper)]
        if paper:
            ref = PAPER_PREFILL_TFLOPS.get(f)
            cells.append("-" if ref is None else " / ".join("OOM" if x is None else f"{x}" for x in ref))
            cells.append("-" if ref is None or ref[0] is None else f"{ref[1] / ref[0]:.3f}")
        t2.append(cells)
    out.append("\nPrefill TFLOPs in the paper's convention (matmuls outside attention kernels and outside the fused "
               "Mamba scan; whole prefill incl. vision tower):\n")
    out.append(_markdown(["frames", "Qwen2-VL stock", "Qwen2-VL fair", "Vamba", "Vamba + scan", "ratio vs stock",
                          "ratio vs fair"] + (["paper Qwen / Vamba", "paper ratio"] if paper else []), t2))
    if not paper:
        return "\n".join(out)
    t3 = []
    for f in frames:
        q, qs, v = by[("qwen2vl", f)].flops, by[("qwen2vl_stock", f)].flops, by[("vamba", f)].flops
        t3.append([str(f), f"{v.whole.paper / qs.whole.paper:.3f} / {v.whole.paper / q.whole.paper:.3f}",
                   f"~{DESIGN_FIGURE_RATIO}",
                   f"{v.lm.total / q.lm.total:.3f} / {v.lm.causal / q.lm.causal:.3f}",
                   f"{DESIGN_LM_RATIO[f]}" if f in DESIGN_LM_RATIO else "-",
                   f"{v.whole.total / q.whole.total:.3f} / {v.whole.causal / q.whole.causal:.3f}",
                   f"{DESIGN_WHOLE_RATIO[f]}" if f in DESIGN_WHOLE_RATIO else "-"])
    out.append("\nVamba / Qwen2-VL ratios against DESIGN.md section 5 (ours: figure convention vs stock / vs fair "
               "baseline; with attention: full-square / causal-effective):\n")
    out.append(_markdown(["frames", "figure conv. (ours)", "paper", "LM with attention (ours)", "DESIGN",
                          "whole with attention (ours)", "DESIGN"], t3))
    return "\n".join(out)


def account_table(rows: list[Row], measured: bool) -> str:
    """Markdown: the memory account per system and frames, and the measurements when there are any."""
    body = []
    for r in sorted(rows, key=lambda r: (SYSTEMS.index(r.system), r.frames)):
        a = r.account
        if a is None:
            continue
        cells = [LABELS[r.system], str(r.frames), str(r.visual_tokens)]
        if measured:
            cells += [r.status, "-" if r.seconds is None else f"{r.seconds:.2f}", _gb(r.peak_gb), _gb(a.peak_gb),
                      _ratio(r.peak_gb, a.peak_gb), a.peak_phase, _gb(a.kv_gb_at_peak + a.logits_gb_at_peak)]
        else:
            paper = PAPER_PREFILL_MEMORY_GB.get(r.frames, (None, None))
            ref = paper[0] if r.system == "qwen2vl_stock" else paper[1] if r.system == "vamba" else None
            cells += [_gb(a.total_gb), _gb(r.account_upcast.total_gb) if r.account_upcast else "-",
                      _gb(a.weights_gb), _gb(a.kv_cache_gb), _gb(a.logits_gb_at_peak), _gb(a.activations_gb),
                      a.peak_phase,
                      "-" if r.frames not in PAPER_PREFILL_MEMORY_GB or r.system not in ("qwen2vl_stock", "vamba")
                      else ("OOM" if ref is None else f"{ref}")]
        body.append(cells)
    if measured:
        headers = ["system", "frames", "visual tokens", "status", "prefill s", "measured peak GB", "account peak GB",
                   "measured/account", "account: peak moment", "account: caches at peak GB"]
    else:
        headers = ["system", "frames", "visual tokens", "account total GB", "... w/ fp32 logits copy", "weights",
                   "KV cache", "logits at peak", "activations at peak", "peak moment", "paper fig. 4 GB"]
    return _markdown(headers, body)


def train_table(rows: list[Row]) -> str:
    # Training computes the loss, hence logits, at every position whatever `logits_to_keep` does at inference.
    names = {"qwen2vl": "Qwen2-VL", "vamba": "Vamba"}
    body = [[names.get(r.system, LABELS[r.system]), str(r.frames), r.train_status,
             "-" if r.train_seconds is None else f"{r.train_seconds:.2f}", _gb(r.train_peak_gb)]
            for r in sorted(rows, key=lambda r: (SYSTEMS.index(r.system), r.frames))
            if r.train_status != "not measured"]
    return _markdown(["system (loss over every position)", "frames", "status", "train step s", "measured peak GB"],
                     body)


def write_csv(rows: list[Row], path: Path) -> None:
    records = [r.csv_record() for r in sorted(rows, key=lambda r: (SYSTEMS.index(r.system), r.frames))]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def _plot_setup():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_memory(rows: list[Row], path: Path, profile: Profile, measured: bool) -> None:
    """Memory vs frames, like the paper's figure 4: accounted (dashed) and measured (solid) per system; points
    skipped by a limit or that failed are marked x (at the accounted value)."""
    plt = _plot_setup()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for system in SYSTEMS:
        pts = sorted((r for r in rows if r.system == system and r.account), key=lambda r: r.frames)
        if not pts:
            continue
        xs = [r.frames for r in pts]
        acc = [(r.account.peak_gb if measured else r.account.total_gb) for r in pts]
        ax.plot(xs, acc, "--", color=COLORS[system], alpha=0.8,
                label=f"{LABELS[system]}: account" + ("" if measured else " (weights+inputs+peak)"))
        if system == "qwen2vl_stock" and not measured and pts[0].account_upcast is not None:
            ax.plot(xs, [r.account_upcast.total_gb for r in pts], ":", color=COLORS[system],
                    label=f"{LABELS[system]}: account with a float32 logits copy (paper-era transformers)")
        if measured:
            ok = [(r.frames, r.peak_gb) for r in pts if r.status == "ok" and r.peak_gb is not None]
            if ok:
                ax.plot(*zip(*ok), "o-", color=COLORS[system], label=f"{LABELS[system]}: measured")
            bad = [(r.frames, r.account.peak_gb, r.status) for r in pts if r.status not in ("ok", "not measured")]
            for x, y, status in bad:
                ax.plot([x], [y], "x", color=COLORS[system], markersize=10, mew=2)
                ax.annotate(status.split(" (")[0], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                            color=COLORS[system])
    if profile.name == "7b" and not measured:
        for i, system in enumerate(("qwen2vl_stock", "vamba")):
            pts = [(f, v[i]) for f, v in PAPER_PREFILL_MEMORY_GB.items() if v[i] is not None]
            ax.plot(*zip(*pts), "*", color=COLORS[system], markersize=11, label=f"paper fig. 4: {LABELS[system]}")
            oom = [f for f, v in PAPER_PREFILL_MEMORY_GB.items() if v[i] is None]
            for f in oom:
                ax.plot([f], [80], "x", color=COLORS[system], markersize=10, mew=2)
        ax.axhline(80, color="gray", lw=0.8, ls=":")
        ax.text(min(r.frames for r in rows), 81, "A800 80 GB (paper: x = OOM)", fontsize=7, color="gray")
    ax.set_xscale("log", base=2)
    if measured:  # the stock baseline's logits dwarf everything else: a log scale keeps the others readable
        ax.set_yscale("log")
    ax.set_xlabel("frames (640x360)" if profile.height == 360 and profile.width == 640 else "frames")
    ax.set_ylabel("prefill peak increase over model+inputs (GB)" if measured else "prefill memory (GB)")
    source = "analytic account"
    if measured:
        methods = {r.method for r in rows if r.method}
        source = "measured: " + ", ".join(sorted(methods)) if methods else "nothing measured"
    ax.set_title(f"Prefill memory, {profile.name} ({source})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_flops(rows: list[Row], path: Path, profile: Profile) -> None:
    """TFLOPs vs frames, like the paper's figure 4 (right): all FLOPs (whole prefill, and LM alone) and the
    paper's convention, with the paper's values at 7B."""
    plt = _plot_setup()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for system in ("qwen2vl", "qwen2vl_stock", "vamba"):
        pts = sorted((r for r in rows if r.system == system and r.flops), key=lambda r: r.frames)
        if not pts:
            continue
        xs = [r.frames for r in pts]
        if system != "qwen2vl_stock":
            axes[0].plot(xs, [r.flops.whole.total / 1e12 for r in pts], "o-", color=COLORS[system],
                         label=f"{LABELS[system]}: whole prefill")
            axes[0].plot(xs, [r.flops.whole.causal / 1e12 for r in pts], "^--", color=COLORS[system], alpha=0.7,
                         label=f"{LABELS[system]}: whole, causal-effective")
            axes[0].plot(xs, [r.flops.lm.total / 1e12 for r in pts], "s:", color=COLORS[system], alpha=0.7,
                         label=f"{LABELS[system]}: language model")
        axes[1].plot(xs, [r.flops.whole.paper / 1e12 for r in pts], "o-", color=COLORS[system],
                     label=LABELS[system])
    if profile.name == "7b":
        for i, system in enumerate(("qwen2vl_stock", "vamba")):
            pts = [(f, v[i]) for f, v in PAPER_PREFILL_TFLOPS.items() if v[i] is not None]
            axes[1].plot(*zip(*pts), "*", color=COLORS[system], markersize=11, label=f"paper: {LABELS[system]}")
    axes[0].set_title("all FLOPs incl. attention")
    axes[1].set_title("paper convention (no attention / fused-scan matmuls)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("frames")
        ax.set_ylabel("prefill TFLOPs")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(f"Prefill FLOPs, {profile.name} (counted on the meta device)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_time(rows: list[Row], path: Path, profile: Profile) -> bool:
    """Measured prefill (and train-step) time vs frames; skipped points marked x. False if nothing measured."""
    timed = [r for r in rows if r.seconds is not None or r.train_seconds is not None]
    if not timed:
        return False
    plt = _plot_setup()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for system in SYSTEMS:
        pts = sorted((r for r in rows if r.system == system), key=lambda r: r.frames)
        ok = [(r.frames, r.seconds) for r in pts if r.status == "ok"]
        if ok:
            ax.plot(*zip(*ok), "o-", color=COLORS[system], label=f"{LABELS[system]}: prefill")
        train = [(r.frames, r.train_seconds) for r in pts if r.train_status == "ok"]
        if train:
            name = LABELS[system].split(" (")[0]  # training computes logits everywhere whatever the prefill keeps
            ax.plot(*zip(*train), "s--", color=COLORS[system], label=f"{name}: train step (fwd+bwd)")
        bad = [r.frames for r in pts if r.status not in ("ok", "not measured")]
        if bad and ok:
            top = max(t for _, t in ok)
            ax.plot(bad, [top] * len(bad), "x", color=COLORS[system], markersize=10, mew=2)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("frames")
    ax.set_ylabel("seconds")
    ax.set_title(f"Prefill time, {profile.name} ({timed[0].method.split(' ')[0] if timed[0].method else ''}); "
                 "x = skipped (limit) / failed")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _predicted_seconds(rows: list[Row], system: str, frames: int, flops_of: Callable[[int], int | None],
                       train: bool = False) -> float | None:
    """Extrapolated time of `system` at `frames` from its largest measured point: seconds x FLOPs ratio
    (with attention, so Qwen2-VL's quadratic term is in it). None when nothing is measured yet."""
    done = [r for r in rows if r.system == system and (r.train_status if train else r.status) == "ok"
            and r.frames < frames]
    if not done:
        return None
    last = max(done, key=lambda r: r.frames)
    f_new, f_old = flops_of(frames), flops_of(last.frames)
    secs = last.train_seconds if train else last.seconds
    if not f_new or not f_old or secs is None:
        return secs * frames / last.frames if secs else None
    return secs * f_new / f_old


def _parse_frames(text: str) -> list[int]:
    try:
        frames = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--frames wants comma-separated integers, got {text!r}") from exc
    if not frames or frames[0] <= 0:
        raise argparse.ArgumentTypeError("--frames wants positive frame counts")
    return frames


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vamba bench",
        description="Prefill FLOPs (meta device), memory (analytic account and measured) and time of Vamba vs "
                    "Qwen2-VL of the same size, like the paper's figures 3 and 4.")
    parser.add_argument("--model", choices=PROFILES, default="small",
                        help="size: 7b (paper; FLOPs/account only on CPU), small (~0.2B, CPU), tiny (tests), "
                             "quickstart (the CPU quickstart's models, 28x28 frames)")
    parser.add_argument("--frames", type=_parse_frames, default=[16, 64, 256], help="comma-separated, e.g. 16,64,256")
    parser.add_argument("--flops-only", action="store_true",
                        help="count FLOPs on the meta device and print the memory account; measure nothing")
    parser.add_argument("--height", type=int, default=None, help="frame height before resize (default 360; tiny 32)")
    parser.add_argument("--width", type=int, default=None, help="frame width before resize (default 640; tiny 32)")
    parser.add_argument("--text-tokens", type=int, default=None, help="prompt tokens besides the video (default 64)")
    parser.add_argument("--stream-chunk", type=int, default=32, help="frames per chunk of the streaming prefill")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default outputs/bench/<model>)")
    parser.add_argument("--train-step", action="store_true", help="also measure one training step (fwd+bwd)")
    parser.add_argument("--stream-demo", action="store_true",
                        help="also run Vamba's streaming prefill at 2x and 4x the most frames Qwen2-VL managed")
    parser.add_argument("--stock", action="store_true",
                        help="also measure Qwen2-VL with stock logits (every position); it is always accounted")
    parser.add_argument("--max-seconds", type=float, default=300.0,
                        help="skip a measurement whose extrapolated time exceeds this (and kill one that runs 2x)")
    parser.add_argument("--max-gb", type=float, default=16.0,
                        help="skip a measurement whose accounted memory (weights+inputs+peak) exceeds this")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per measurement (default: torch's, one per core); 1 is steadier on a "
                             "machine shared with other jobs")
    parser.add_argument("--reuse", action="store_true",
                        help="take measurements already in --out/results.csv (same model, frame size, chunk) "
                             "instead of measuring them again")
    parser.add_argument("--batch", action="store_true",
                        help="run all measurements in one subprocess (faster start-up; only the memory limit is "
                             "predicted). Default: one fresh subprocess per measurement")
    return parser


def _measure_all(rows: list[Row], specs: list[tuple[Row, dict[str, Any]]], args, flops_of, train: bool,
                 counter: list[int], total: int, previous: dict[tuple[str, int], dict[str, str]]) -> None:
    """Measure `specs` (ordered by system, then frames), skipping anything predicted to exceed the limits, and
    every larger frame count of a system once one of its points was skipped or failed.

    Predictions: memory from the account (prefill) or a linear extrapolation of the last measured point
    (training); time by scaling the last measured point of the same system with its FLOPs (attention included,
    so Qwen2-VL's quadratic growth is in the prediction). A measurement still running at twice --max-seconds
    (plus start-up) is killed. With --batch all measurements run in one subprocess, so only the memory limit
    can be predicted (times are known only at the end) and the subprocess's deadline bounds the time.
    """
    blocked: set[str] = set()
    batch: list[tuple[Row, dict[str, Any]]] = []
    for row, spec in specs:
        counter[0] += 1
        what = f"[{counter[0]}/{total}] {'train step' if train else 'prefill'} {row.system} @ {row.frames} frames " \
               f"({row.visual_tokens} visual tokens)"
        if _reuse(row, previous, train):
            _log(f"{what}: taken from the earlier results.csv")
            continue
        need = row.account.total_gb if row.account else None
        secs = _predicted_seconds(rows, row.system, row.frames, flops_of(row.system), train)
        reason = None
        if row.system in blocked:
            reason = "a smaller frame count already hit a limit"
        elif not train and need is not None and need > args.max_gb:
            reason = f"accounted {need:.1f} GB > --max-gb {args.max_gb:g}"
        elif train and _predicted_train_gb(rows, row) > args.max_gb:
            reason = f"extrapolated {_predicted_train_gb(rows, row):.1f} GB > --max-gb {args.max_gb:g}"
        elif secs is not None and secs > args.max_seconds:
            reason = f"extrapolated {secs:.0f} s > --max-seconds {args.max_seconds:g}"
        if reason:
            _record(row, {"status": "skipped (limit)"}, train)
            blocked.add(row.system)
            _log(f"{what}: skipped (limit: {reason})")
            continue
        if args.batch:
            batch.append((row, spec))
            continue
        _log(f"{what}: running" + (f" (~{secs:.0f} s expected)" if secs else "") + " ...")
        res = measure(spec, timeout_s=2 * args.max_seconds + 120)
        _record(row, res, train)
        _report(row, res, train, "   ")
        if (row.train_status if train else row.status) != "ok":
            blocked.add(row.system)
    if batch:
        _log(f"running {len(batch)} measurements in one subprocess ...")
        results = measure_batch([spec for _, spec in batch], (2 * args.max_seconds + 60) * len(batch) + 120)
        for (row, _), res in zip(batch, results):
            _record(row, res, train)
            _report(row, res, train, f"  {row.system} @ {row.frames} frames:")


def _report(row: Row, res: dict[str, Any], train: bool, prefix: str) -> None:
    if res["status"] != "ok":
        _log(f"{prefix} {res['status']}" + (f": {res.get('error', '')[-300:]}" if res.get("error") else ""))
        return
    acc = "" if train or not row.account else f" (account {row.account.peak_gb:.4g} GB)"
    _log(f"{prefix} ok: {res['seconds']:.2f} s, peak +{res['peak_gb']:.4g} GB{acc}")


def _predicted_train_gb(rows: list[Row], row: Row) -> float:
    """Training memory has no account: extrapolate linearly in frames from the largest measured point (plus the
    weights, gradients and inputs), 0 when nothing is measured yet."""
    done = [r for r in rows if r.system == row.system and r.train_status == "ok" and r.frames < row.frames]
    if not done or row.account is None:
        return 0.0
    last = max(done, key=lambda r: r.frames)
    return 2 * row.account.weights_gb + row.account.inputs_gb + last.train_peak_gb * row.frames / last.frames


def _load_previous(path: Path, profile: str, height: int, width: int, chunk: int
                   ) -> dict[tuple[str, int], dict[str, str]]:
    """Successful measurements of an earlier run (results.csv) with the same model, frame size and chunk."""
    if not path.exists():
        return {}
    with path.open() as fh:
        records = list(csv.DictReader(fh))
    out = {}
    for rec in records:
        same = (rec.get("profile") == profile and rec.get("height") == str(height) and rec.get("width") == str(width)
                and (rec.get("system") != "vamba_stream" or rec.get("chunk_frames") == str(chunk)))
        if same:
            out[(rec["system"], int(rec["frames"]))] = rec
    return out


def _reuse(row: Row, previous: dict[tuple[str, int], dict[str, str]], train: bool) -> bool:
    rec = previous.get((row.system, row.frames))
    if rec is None or rec.get("train_status" if train else "status") != "ok":
        return False
    if train:
        _record(row, {"status": "ok", "seconds": float(rec["train_time_s"]), "peak_gb": float(rec["train_peak_gb"])},
                True)
    else:
        _record(row, {"status": "ok", "seconds": float(rec["time_s"]), "peak_gb": float(rec["peak_gb"]),
                      "method": rec.get("method", "")}, False)
    return True


def _record(row: Row, res: dict[str, Any], train: bool) -> None:
    if train:
        row.train_status = res["status"]
        row.train_seconds = res.get("seconds") if res["status"] == "ok" else None
        row.train_peak_gb = res.get("peak_gb")
    else:
        row.status = res["status"]
        row.seconds = res.get("seconds") if res["status"] == "ok" else None
        row.peak_gb = res.get("peak_gb")
        row.method = res.get("method", row.method)


def main(argv: list[str] | None = None) -> int:
    """`vamba bench [options]`: see `build_parser` and the module docstring. Returns an exit code."""
    args = build_parser().parse_args(argv)
    profile = get_profile_config(args.model)
    height, width = args.height or profile.height, args.width or profile.width
    out = args.out or Path("outputs") / "bench" / profile.name
    out.mkdir(parents=True, exist_ok=True)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    tp = profile.qwen2vl.vision_config.temporal_patch_size
    bad = [f for f in args.frames if f % tp]
    if bad:
        raise SystemExit(f"vamba bench: frames must be multiples of the temporal patch size {tp}: {bad}")
    geom0 = profile_geometry(profile, tp, height, width)
    _log(f"vamba bench: {profile.name} ({'bf16' if profile.dtype == torch.bfloat16 else 'fp32'}), frames "
         f"{height}x{width} -> {geom0.resized_height}x{geom0.resized_width}, "
         f"{geom0.tokens / tp:g} visual tokens per frame, prompt {args.text_tokens or profile.text_tokens} tokens")

    # 1. FLOPs on meta.
    _log("counting prefill FLOPs on the meta device ...")
    t0 = time.perf_counter()
    flops = prefill_flops(profile, args.frames, height, width, args.text_tokens, progress=True)
    _log(f"  done in {time.perf_counter() - t0:.1f} s")
    flops_by = {(p.system, p.frames): p for p in flops}

    # 2. Rows with the memory account.
    rows: list[Row] = []

    def new_row(system: str, frames: int) -> Row:
        geom = profile_geometry(profile, frames, height, width)
        account = memory_account(profile, system, frames, height, width, chunk_frames=args.stream_chunk,
                                 text_tokens=args.text_tokens)
        upcast = None
        if system == "qwen2vl_stock":
            upcast = memory_account(profile, system, frames, height, width, text_tokens=args.text_tokens,
                                    logits_upcast=True)
        row = Row(profile.name, system, frames, geom.tokens, height, width, args.stream_chunk,
                  flops_by.get((system, frames)), account, upcast)
        rows.append(row)
        return row

    for system in SYSTEMS:
        for f in args.frames:
            new_row(system, f)

    _log("\n## FLOPs\n")
    _log(flops_tables(rows, paper=profile.name == "7b"))

    # 3. Measurements.
    if not args.flops_only:
        def flops_of(system: str) -> Callable[[int], int | None]:
            base = "vamba" if system == "vamba_stream" else system

            def of(frames: int) -> int | None:
                p = flops_by.get((base, frames))
                if p is None:
                    p = prefill_flops(profile, [frames], height, width, args.text_tokens)
                    for q in p:
                        flops_by[(q.system, q.frames)] = q
                    p = flops_by.get((base, frames))
                return p.whole.total if p else None
            return of

        measured = ["qwen2vl", "qwen2vl_stock", "vamba", "vamba_stream"] if args.stock else list(MEASURED_SYSTEMS)

        def spec_for(row: Row, train: bool) -> dict[str, Any]:
            return {"profile": profile.name, "system": row.system, "frames": row.frames, "height": height,
                    "width": width, "chunk_frames": args.stream_chunk, "text_tokens": args.text_tokens,
                    "device": device, "train": train, "threads": args.threads}

        specs = [(r, spec_for(r, False)) for s in measured for r in sorted(rows, key=lambda r: r.frames)
                 if r.system == s]
        train_specs = ([(r, spec_for(r, True)) for s in ("qwen2vl", "vamba")
                        for r in sorted(rows, key=lambda r: r.frames) if r.system == s] if args.train_step else [])
        counter = [0]
        _log(f"\nmeasuring on {device} (limits: {args.max_seconds:g} s, {args.max_gb:g} GB; "
             f"{'one subprocess for all' if args.batch else 'one fresh subprocess per measurement'}) ...")
        previous = (_load_previous(out / "results.csv", profile.name, height, width, args.stream_chunk)
                    if args.reuse else {})
        _measure_all(rows, specs, args, flops_of, False, counter, len(specs) + len(train_specs), previous)
        if train_specs:
            _measure_all(rows, train_specs, args, flops_of, True, counter, len(specs) + len(train_specs), previous)
        if args.stream_demo:
            managed = [r.frames for r in rows if r.system == "qwen2vl" and r.status == "ok"]
            if managed:
                top = max(managed)
                demo = [f for f in (2 * top, 4 * top) if f not in args.frames]
                _log(f"\nstreaming demonstration: Qwen2-VL managed up to {top} frames; Vamba streaming at "
                     f"{', '.join(map(str, demo))} frames (chunks of {args.stream_chunk})")
                demo_rows = [new_row("vamba_stream", f) for f in demo]
                _measure_all(rows, [(r, spec_for(r, False)) for r in demo_rows], args, flops_of, False,
                             [0], len(demo_rows), previous)
            else:
                _log("streaming demonstration: Qwen2-VL measured no point, nothing to compare with")
        _log("\n## Memory and time (measured vs accounted)\n")
        _log(account_table(rows, measured=True))
        if args.train_step:
            _log("\n## Training step (forward + backward, gradient checkpointing)\n")
            _log(train_table(rows))
        stream = sorted((r for r in rows if r.system == "vamba_stream" and r.status == "ok"), key=lambda r: r.frames)
        if len(stream) >= 2 and stream[0].peak_gb:
            # Compare from the first video at least one chunk long: shorter ones are a single, smaller chunk.
            first = next((r for r in stream if r.frames >= args.stream_chunk), stream[0])
            last = stream[-1]
            full = {r.frames: r for r in rows if r.system == "vamba" and r.status == "ok"}
            _log(f"\nstreaming prefill (chunks of {args.stream_chunk} frames): measured peak +{first.peak_gb:.4g} GB "
                 f"at {first.frames} frames -> +{last.peak_gb:.4g} GB at {last.frames} frames "
                 f"({last.frames / first.frames:g}x frames). Account: largest activation set "
                 f"{first.account.max_activations_gb:.4g} -> {last.account.max_activations_gb:.4g} GB (bounded by "
                 f"the chunk); video key/value cache {first.account.kv_cache_gb:.4g} -> "
                 f"{last.account.kv_cache_gb:.4g} GB, filled in place (the only term that grows).")
            if full:
                top = max(full)
                _log(f"full prefill for comparison: +{full[min(full)].peak_gb:.4g} GB at {min(full)} frames -> "
                     f"+{full[top].peak_gb:.4g} GB at {top} frames.")
    else:
        _log(f"\n## Memory account ({profile.name}, analytic; GB = 1e9 bytes)\n")
        _log(account_table(rows, measured=False))

    # 4. Files.
    write_csv(rows, out / "results.csv")
    plot_memory(rows, out / "memory.png", profile, measured=not args.flops_only)
    plot_flops(rows, out / "flops.png", profile)
    drew_time = plot_time(rows, out / "time.png", profile)
    _log(f"\nwrote {out / 'results.csv'}, {out / 'memory.png'}, {out / 'flops.png'}"
         + (f", {out / 'time.png'}" if drew_time else " (no time.png: nothing was timed)"))
    return 0


def _worker_main(specs_json: str) -> int:
    specs = json.loads(specs_json)
    for spec in specs if isinstance(specs, list) else [specs]:
        print("RESULT " + json.dumps(measure_in_process(spec)), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2]))
    sys.exit(main())
