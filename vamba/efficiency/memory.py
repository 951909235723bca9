"""Profiles (a flavor with its default input) and the analytic memory account of one inference prefill.

`memory_account` predicts what the code keeps alive at the worst moment of a prefill without autograd: weights,
inputs, the caches it returns and the live activations, each a tensor the code holds (nothing is fitted; an H100
agreed within 1%). Derivation and symbols: docs/efficiency.md ("Memory account"). GB = 10^9 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from types import SimpleNamespace
from typing import Any

import torch
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from vamba.modeling import VambaConfig, VambaForConditionalGeneration
from vamba.modeling.flavors import get_flavor, qwen2vl_config, vamba_config
from vamba.modeling.mamba2 import default_piece_len
from vamba.modeling.ssd import block_elements, scan_chunk

from ..modeling.errors import UsageError

GB = 1e9
SYSTEMS = ("qwen2vl", "qwen2vl_stock", "vamba", "vamba_stream")
# Frame size, prompt tokens and the resize bounds (merged tokens per temporal patch) per flavor; default 640x360,
# 64 prompt tokens and the released video processor's 128..768; the device the account predicts, default CPU.
INPUTS = {"7b": {"device": "cuda"}, "tiny": {"height": 32, "width": 32, "text_tokens": 16,
                                             "min_tokens_per_frame_pair": 4},
          "quickstart": {"height": 28, "width": 28, "text_tokens": 90, "min_tokens_per_frame_pair": 1,
                         "max_tokens_per_frame_pair": 16}}


@dataclass
class Profile:
    """A flavor as the efficiency tools run it: the two same-size configs (SDPA attention), dtype, default input,
    and the device kind the memory account predicts (7b: a GPU; the others: the CPU they are measured on)."""

    name: str
    qwen2vl: Qwen2VLConfig
    vamba: VambaConfig
    dtype: torch.dtype
    height: int = 360
    width: int = 640
    text_tokens: int = 64
    min_tokens_per_frame_pair: int = 128
    max_tokens_per_frame_pair: int = 768
    device: str = "cpu"

    @cached_property
    def parameters(self) -> dict[str, int]:
        """Exact parameter counts {"qwen2vl", "vamba"}, from the models built on the meta device."""
        with torch.device("meta"):
            models = {"qwen2vl": Qwen2VLForConditionalGeneration(self.qwen2vl),
                      "vamba": VambaForConditionalGeneration(self.vamba)}
        return {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}


def get_profile(name: str, **text_overrides: Any) -> Profile:
    """The profile of flavor `name` ("7b", "small", "tiny", "quickstart"); keywords override text-config fields."""
    qwen = qwen2vl_config(name, **text_overrides)
    vamba = vamba_config(name, qwen)
    qwen._attn_implementation = vamba._attn_implementation = "sdpa"
    return Profile(name, qwen, vamba, get_flavor(name).dtype, **INPUTS.get(name, {}))


@dataclass(frozen=True)
class VideoGeometry:
    """Resized frames as patches: grid (t, h, w); `merge`^2 patches make one visual token; `patch_row` values per
    row of `pixel_values_videos`."""

    grid_thw: tuple[int, int, int]
    merge: int
    patch_row: int

    @property
    def patches(self) -> int:
        return self.grid_thw[0] * self.grid_thw[1] * self.grid_thw[2]

    @property
    def tokens(self) -> int:
        return self.patches // self.merge**2


def profile_geometry(profile: Profile, frames: int, height: int | None = None, width: int | None = None
                     ) -> VideoGeometry:
    """Visual-token geometry of `frames` frames (default size: the profile's). Qwen2-VL's `smart_resize`: sides
    multiples of patch x merge, area within the profile's bounds; 640x360 at 7B -> 644x364 -> 299 tokens per 2
    frames. ValueError unless `frames` is a positive multiple of the temporal patch size."""
    v = profile.qwen2vl.vision_config
    tp, factor = v.temporal_patch_size, v.patch_size * v.spatial_merge_size
    if frames <= 0 or frames % tp:
        raise UsageError(f"frames must be a positive multiple of the temporal patch size {tp}, got {frames}")
    rh, rw = smart_resize(height or profile.height, width or profile.width, factor=factor,
                          min_pixels=profile.min_tokens_per_frame_pair * factor**2,
                          max_pixels=profile.max_tokens_per_frame_pair * factor**2)
    grid = (frames // tp, rh // v.patch_size, rw // v.patch_size)
    return VideoGeometry(grid, v.spatial_merge_size, v.in_channels * tp * v.patch_size**2)


@dataclass
class MemoryAccount:
    """Predicted memory of one prefill, GB. `peak_gb`: the increase over the loaded model and inputs, at the moment
    `peak_phase`, made of the caches alive then (`kv_gb_at_peak`, `logits_gb_at_peak`) and `activations_gb`;
    `total_gb` adds weights and inputs (what a GPU holds). `max_activations_gb`: the largest non-cache part of
    any moment (what streaming keeps bounded)."""

    visual_tokens: int
    sequence: int  # the language model's own sequence: S for Qwen2-VL, N for Vamba
    weights_gb: float
    inputs_gb: float
    kv_cache_gb: float
    logits_gb: float
    peak_gb: float
    peak_phase: str
    kv_gb_at_peak: float
    logits_gb_at_peak: float
    activations_gb: float
    max_activations_gb: float

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.inputs_gb + self.peak_gb


def sizes(profile: Profile, b: int) -> SimpleNamespace:
    """The config numbers of the formulas, named as the symbols of docs/efficiency.md; b bytes per element."""
    v, t = profile.vamba.vision_config, profile.vamba.text_config
    mix = t.mixer_config or {}
    head_dim, d_i = t.hidden_size // t.num_attention_heads, mix.get("expand", 2) * t.hidden_size
    bc, headdim = 2 * mix.get("ngroups", 1) * mix.get("d_state", 128), mix.get("headdim", 64)
    return SimpleNamespace(
        b=b, E=v.embed_dim, I_v=int(v.embed_dim * v.mlp_ratio), d_v=v.embed_dim // v.num_heads, d=t.hidden_size,
        I=t.intermediate_size, L=t.num_hidden_layers, K=t.num_key_value_heads * head_dim, head_dim=head_dim,
        V=t.vocab_size, D_i=d_i, C=d_i + bc, D_in=2 * d_i + bc + d_i // headdim, heads=d_i // headdim,
        headdim=headdim, state=mix.get("d_state", 128), chunk=scan_chunk(mix.get("chunk_size", 256)),
        has_mixer=t.mixer_type == "mamba2", piece=default_piece_len(profile.device),
        block=block_elements(profile.device))


def _vision(s: SimpleNamespace, P: int, M: int, held: float) -> dict[str, float]:
    """The vision tower's worst moments over P patches (M tokens) on top of `held` bytes."""
    E, b, f = s.E, s.b, 4
    always = held + 2 * P * s.d_v * f + P * 2 * 8  # rotary cos/sin (fp32) and int64 positions
    upcast = 2 * P * E * f if b < 4 else 0
    return {"vision attention rotary": always + P * E * (5 * b + 4 * f) + upcast,
            "vision attention output": always + 10 * P * E * b,
            "vision mlp": always + 3 * P * E * b + 3 * P * s.I_v * b,
            "vision merger": always + max(4 * P * E * b, 3 * P * E * b + M * s.d * b)}


def _mixer_piece(s: SimpleNamespace, p: int, conv_state_alive: bool) -> float:
    """Worst temporaries of one no-grad Mamba-2 call on p tokens: conv, scan (one SSD group) or gated norm."""
    b = s.b
    group = min(p, max(1, s.block // (s.heads * s.chunk**2)) * s.chunk)
    n = -(-group // s.chunk)
    scan_work = n * s.heads * s.chunk**2 * b + 2 * group * s.D_i * b  # at the intra-chunk matmul
    held = p * s.C * b if conv_state_alive else 0
    conv = p * s.D_in * b + (2 if conv_state_alive else 4) * p * s.C * b
    scan = p * s.D_in * b + p * s.C * b + p * s.D_i * b + scan_work + held
    norm = p * s.D_in * b + 2 * p * s.D_i * b + held
    return max(conv, scan, norm)


def _mixer_layer(s: SimpleNamespace, m: int, held: float, stream_copy: bool, conv_state_alive: bool
                 ) -> dict[str, float]:
    """One Mamba block over m video tokens: its RMSNorm, the mixer (piece by piece) and the residual add."""
    base = held + (m * s.d * s.b if stream_copy else 0)
    if m <= s.piece:
        mixer = base + m * s.d * s.b + _mixer_piece(s, m, conv_state_alive)
    else:  # from the second piece on, the full-length output exists too
        later = min(s.piece, m - s.piece)
        mixer = base + m * s.d * s.b + max(_mixer_piece(s, s.piece, conv_state_alive),
                                           m * s.d * s.b + _mixer_piece(s, later, conv_state_alive))
    return {"mixer rmsnorm": base + 2 * m * s.d * 4, "mixer": mixer, "mixer residual": base + 2 * m * s.d * s.b}


def _kv(s: SimpleNamespace, tokens: int, layers: int | None = None) -> float:
    return (s.L if layers is None else layers) * 2 * tokens * s.K * s.b


def _qwen2vl_moments(s: SimpleNamespace, P: int, M: int, T: int, stock: bool, upcast: bool) -> dict[str, tuple]:
    """Qwen2-VL over S = M + T + 3 inline tokens: the tower next to the inputs embeddings, the last layer's MLP
    next to the whole KV cache, and the head (all S rows of logits for the stock forward, else one)."""
    S, d, b = M + T + 3, s.d, s.b
    out = {k: (v, 0, 0) for k, v in _vision(s, P, M, held=S * d * b).items()}
    held = P * s.E * b + 2 * M * d * b + S * d * b + 2 * S * s.head_dim * b + 3 * S * 8
    kv = _kv(s, S)
    out["lm last-layer mlp"] = (held + kv + 3 * S * d * b + 3 * S * s.I * b, kv, 0)
    logits = (S if stock else 1) * s.V * (b + (4 if upcast and stock else 0))
    out["lm head"] = (kv + S * d * b + logits, kv, logits)
    return out


def _stream_moments(s: SimpleNamespace, geom: VideoGeometry, chunk_frames: int, tp: int) -> dict[str, tuple]:
    """Streaming prefill: each chunk's tower and Mamba block on top of the preallocated cache filled so far."""
    out: dict[str, tuple] = {}
    step, t = max(1, chunk_frames // tp), geom.grid_thw[0]
    per_t = geom.grid_thw[1] * geom.grid_thw[2]  # patches per temporal patch
    done = prev = M_c = 0
    for t0 in range(0, t, step):
        M_c = min(step, t - t0) * per_t // geom.merge**2
        kv_before = _kv(s, done)
        moments = {k: (v, kv_before) for k, v in _vision(s, M_c * geom.merge**2, M_c,
                                                          held=kv_before + prev * s.d * s.b).items()}
        if s.has_mixer and s.L > 1:
            kv = kv_before + _kv(s, M_c, s.L - 1)
            moments.update({k: (v, kv) for k, v in _mixer_layer(s, M_c, kv, True, True).items()})
        for name, (nbytes, kv) in moments.items():
            if nbytes > out.get(f"chunk {name}", (-1,))[0]:
                out[f"chunk {name}"] = (nbytes, kv, 0)
        done, prev = done + M_c, M_c
    kv_video = _kv(s, geom.tokens)
    out["filled cache"] = (kv_video + M_c * s.d * s.b, kv_video, 0)
    return out


def memory_account(profile: Profile, system: str, frames: int, height: int | None = None, width: int | None = None,
                   chunk_frames: int = 32, text_tokens: int | None = None, dtype: torch.dtype | None = None,
                   logits_upcast: bool = False) -> MemoryAccount:
    """Predicted peak memory of a prefill of `frames` frames for `system` at `profile`'s size.

    system: "qwen2vl" (`logits_to_keep=1`), "qwen2vl_stock" (logits for every position), "vamba" (full prefill) or
    "vamba_stream" (`chunk_frames` frames per chunk, then the prompt). `logits_upcast` adds a float32 copy of the
    stock logits, as the transformers of the paper's time made. ValueError for an unknown system.
    """
    if system not in SYSTEMS:
        raise UsageError(f"unknown system {system!r}; choose one of {SYSTEMS}")
    b = torch.empty(0, dtype=dtype or profile.dtype).element_size()
    s, geom = sizes(profile, b), profile_geometry(profile, frames, height, width)
    T = profile.text_tokens if text_tokens is None else text_tokens
    P, M, N = geom.patches, geom.tokens, T + 3
    pixels = P * geom.patch_row * b
    if system.startswith("qwen2vl"):
        moments = _qwen2vl_moments(s, P, M, T, system == "qwen2vl_stock", logits_upcast)
        seq, inputs, kv_final = M + T + 3, pixels + 2 * (M + T + 3) * 8, _kv(s, M + T + 3)
        logits = moments["lm head"][2]
    else:
        seq, inputs, logits = N, pixels + N * 8, s.V * b
        text_kv, kv_video = _kv(s, N), _kv(s, M)
        text_prefill = N * s.d * b * 6 + N * s.I * b * 3 + text_kv + s.V * b
        if system == "vamba":
            moments = {k: (v, 0, 0) for k, v in _vision(s, P, M, held=0).items()}
            held = 2 * M * s.d * b + 5 * M * 8  # the vision output, the stream, int64 positions and indices
            if s.has_mixer and s.L > 1:
                kv = _kv(s, M, s.L - 1)
                moments.update({f"lm {k}": (v, kv, 0) for k, v in _mixer_layer(s, M, held + kv, s.L > 2,
                                                                                False).items()})
            moments["lm text path"] = (held + M * s.d * b + kv_video + text_prefill, kv_video + text_kv, 0)
        else:
            moments = _stream_moments(s, geom, chunk_frames, profile.vamba.vision_config.temporal_patch_size)
            moments["text prefill"] = (kv_video + text_prefill, kv_video + text_kv, 0)
        kv_final = kv_video + text_kv
    phase = max(moments, key=lambda k: moments[k][0])
    peak, kv_peak, logits_peak = moments[phase]
    kind = "qwen2vl" if system.startswith("qwen2vl") else "vamba"
    return MemoryAccount(
        M, seq, profile.parameters[kind] * b / GB, inputs / GB, kv_final / GB, logits / GB,
        peak / GB, phase, kv_peak / GB, logits_peak / GB, (peak - kv_peak - logits_peak) / GB,
        max(v - kv - lg for v, kv, lg in moments.values()) / GB)
