"""Analytic memory account of one prefill: Qwen2-VL (video inline) vs Vamba (full or streaming prefill).

`memory_account(profile, system, frames)` predicts, for a config and a frame count, what the PyTorch code of this
repository (and transformers 5.23's Qwen2-VL) keeps alive at the worst moment of an inference prefill (no
autograd): the weights, the inputs, the caches it returns (KV cache, logits) and the activations live at the
peak. It is checked against measured peaks (`vamba bench`, `tests/test_efficiency.py`).

How it was built: the live set of every phase was read off a tensor-storage tracker (a TorchDispatchMode
that follows every storage the forward allocates until it is freed) at small sizes, in fp32 and bf16; each
formula below lists those tensors. Nothing is fitted: every term is a tensor the code holds, with its shape.
The measured peak (RSS increase on CPU, `torch.cuda.max_memory_allocated` on GPU) adds only allocator slack and
the scratch buffers of single kernels (oneDNN reorders, GEMM packing, SDPA blocks), a few percent.

Symbols (all per sample, batch 1):

- F frames resized as Qwen2-VL's video processor does (`smart_resize`, factor = patch x merge): a grid of
  t = F / tp temporal patches of h x w patches; P = t*h*w patches; M = P / merge^2 visual tokens (149.5 per
  640x360 frame at 7B).
- T prompt tokens; Qwen2-VL's sequence S = M + T + 3 (bos, vision start/end around M inline video pads); Vamba's
  text N = T + 3 (the markers only).
- b bytes per element of the model dtype (2 for bf16, 4 for fp32); f = 4 (float32 temporaries).
- Vision: E = embed dim, I_v = mlp_ratio * E, d_v = E / heads. LM: d = hidden, I = MLP width, L layers,
  K = kv_heads * head_dim (GQA keys per token), V = vocabulary. Mamba-2: D_i = expand * d, C = D_i + 2*groups*
  d_state (conv channels), D_in = 2*D_i + 2*groups*d_state + heads (in_proj width), p = tokens per mixer piece
  (`Mamba2Mixer.inference_piece_len`, 4096, or M if smaller).

What dominates (b = bf16 at 7B, per visual token):

- Vision tower, both models: its worst moment is inside a block (attention: rotary in float32 over every patch;
  MLP: three P x I_v tensors), about 170 KB per visual token at 7B bf16. It runs over ALL frames at once in
  a full prefill, so it grows linearly with frames for Qwen2-VL and for Vamba alike.
- Qwen2-VL language model: the MLP of the last layer over all S tokens (3 S x I), plus the KV cache of all
  layers (2 L K b = 57 KB/token at 7B) and the inputs embeddings: about 220 KB/token at 7B.
- Qwen2-VL "stock" logits (transformers returns logits for every position unless `logits_to_keep=1`): S x V
  values, 0.30 MB/token at bf16 and vocab 152064; the transformers of the paper's time also upcast them to
  float32 (`logits_upcast=True`: 6 bytes x V = 0.91 MB/token), which is what the paper's baseline measured
  (DESIGN.md section 5: about 1.15 MB/token in all). The fair baseline keeps only the last position.
- Vamba language model: the video never enters the text; per layer the video keys/values (2 K b per token,
  cached) and, in the Mamba block, a handful of M x d copies of the video stream (the stream kept for the
  whole forward, the vision output, the layer's input, its RMSNorm and the mixer output). The mixer itself
  runs in pieces of p tokens without autograd, so its internals (in_proj output, conv, gated norm) are bounded.
- Vamba streaming prefill (`encode_video(..., chunk_frames=K)`): everything above exists for one chunk of K
  frames at a time; only the video key/value cache grows with frames (57 KB/token at 7B). It is preallocated
  at its final size and filled in place, so it exists once.

GB here means 10^9 bytes (as DESIGN.md's "57 KB per token").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

if TYPE_CHECKING:
    from .configs import Profile

GB = 1e9
SYSTEMS = ("qwen2vl", "qwen2vl_stock", "vamba", "vamba_stream")
# Tokens per mixer piece when autograd is off (`Mamba2Mixer.inference_piece_len`), and the SSD scan's bound on
# its per-group score tensor (`ssd._DEFAULT_MAX_BLOCK_ELEMENTS`); read from the code when available.
try:
    from vamba.modeling.mamba2 import Mamba2Mixer as _Mixer

    MIXER_PIECE = int(getattr(_Mixer, "inference_piece_len", 0) or 0)
except ImportError:  # pragma: no cover - the package always ships the mixer
    MIXER_PIECE = 4096
try:
    from vamba.modeling.ssd import _DEFAULT_MAX_BLOCK_ELEMENTS as SSD_BLOCK_ELEMENTS
except ImportError:  # pragma: no cover
    SSD_BLOCK_ELEMENTS = 1 << 21


# ----------------------------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoGeometry:
    """Where a video's visual tokens come from.

    Attributes:
        frames: sampled frames F (a multiple of the temporal patch size).
        height, width: frame size before the resize, in pixels.
        resized_height, resized_width: after Qwen2-VL's `smart_resize` (multiples of patch x merge).
        grid_thw: patch grid (t, h, w) as in `video_grid_thw`: t = F / temporal_patch, h/w in patches.
        merge: spatial merge size (2: 2x2 patches make one visual token).
        patch_row: values per patch row of `pixel_values_videos` (channels x temporal_patch x patch^2).
    """

    frames: int
    height: int
    width: int
    resized_height: int
    resized_width: int
    grid_thw: tuple[int, int, int]
    merge: int
    patch_row: int

    @property
    def patches(self) -> int:
        """P: rows of `pixel_values_videos`."""
        t, h, w = self.grid_thw
        return t * h * w

    @property
    def patches_per_temporal_patch(self) -> int:
        return self.grid_thw[1] * self.grid_thw[2]

    @property
    def tokens(self) -> int:
        """M: visual tokens after the merger."""
        return self.patches // self.merge**2

    @property
    def tokens_per_frame(self) -> float:
        return self.tokens / self.frames


def video_geometry(
    config,
    frames: int,
    height: int = 360,
    width: int = 640,
    min_tokens_per_frame_pair: int = 128,
    max_tokens_per_frame_pair: int = 768,
) -> VideoGeometry:
    """Visual-token geometry of `frames` frames of `height` x `width` pixels for a Qwen2-VL/Vamba `config`.

    The resize is Qwen2-VL's (transformers' `smart_resize`, the processor's own rule): sides become
    multiples of patch x merge, the area stays within [min, max] merged tokens per temporal patch (128 and 768
    for the released video processor). 640x360 at 7B -> 644x364 -> 26 x 46 patches -> 299 tokens per 2 frames.

    Raises:
        ValueError: if `frames` is not a positive multiple of the temporal patch size.
    """
    v = config.vision_config
    tp = v.temporal_patch_size
    if frames <= 0 or frames % tp:
        raise ValueError(f"frames must be a positive multiple of the temporal patch size {tp}, got {frames}")
    factor = v.patch_size * v.spatial_merge_size
    rh, rw = smart_resize(height, width, factor=factor, min_pixels=min_tokens_per_frame_pair * factor**2,
                          max_pixels=max_tokens_per_frame_pair * factor**2)
    grid = (frames // tp, rh // v.patch_size, rw // v.patch_size)
    return VideoGeometry(frames, height, width, rh, rw, grid, v.spatial_merge_size,
                         v.in_channels * tp * v.patch_size**2)


def profile_geometry(profile: Profile, frames: int, height: int | None = None, width: int | None = None
                     ) -> VideoGeometry:
    """`video_geometry` with the profile's default frame size and resize bounds."""
    return video_geometry(profile.qwen2vl, frames, height or profile.height, width or profile.width,
                          profile.min_tokens_per_frame_pair, profile.max_tokens_per_frame_pair)


# ----------------------------------------------------------------------------------------------------------------
# The account
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class MemoryAccount:
    """Predicted memory of one prefill, in GB (10^9 bytes).

    `peak_gb` is what a measurement of the *increase* over the loaded model and its inputs sees (peak RSS
    increase on CPU, max_memory_allocated increase on GPU); `total_gb` adds the weights and inputs (what a GPU
    must hold, the paper's figure 4). The peak is decomposed into the caches alive at that moment (`kv_gb_at_peak`,
    `logits_gb_at_peak`) and everything else (`activations_gb`, temporaries of the moment named `peak_phase`).
    `max_activations_gb` is the largest non-cache part of any moment: what streaming keeps bounded.
    `moments_gb` lists every candidate moment (the peak is their maximum), for inspection.
    """

    system: str
    frames: int
    visual_tokens: int
    sequence: int  # tokens of the language model's own sequence (S for Qwen2-VL, N for Vamba)
    dtype_bytes: int
    weights_gb: float
    inputs_gb: float
    kv_cache_gb: float  # the cache returned by the prefill (kept for decoding)
    logits_gb: float  # logits returned by the prefill
    peak_gb: float
    peak_phase: str
    kv_gb_at_peak: float
    logits_gb_at_peak: float
    activations_gb: float
    max_activations_gb: float  # the largest non-cache live set at any moment (not necessarily at the peak)
    moments_gb: dict[str, float] = field(default_factory=dict)

    @property
    def total_gb(self) -> float:
        """Weights + inputs + the prefill's peak increase: the device memory the prefill needs."""
        return self.weights_gb + self.inputs_gb + self.peak_gb


@dataclass(frozen=True)
class _Sizes:
    """The config numbers the formulas use (see the module docstring for the symbols)."""

    b: int
    E: int
    I_v: int
    d_v: int
    d: int
    I: int  # noqa: E741 - the MLP width, as in the docstring
    L: int
    K: int
    head_dim: int
    V: int
    D_i: int
    C: int
    D_in: int
    m_heads: int
    m_headdim: int
    m_state: int
    chunk: int
    has_mixer: bool


def _sizes(profile: Profile, dtype_bytes: int) -> _Sizes:
    v, t = profile.vamba.vision_config, profile.vamba.text_config
    mix = t.mixer_config or {}
    head_dim = t.hidden_size // t.num_attention_heads
    d_i = mix.get("expand", 2) * t.hidden_size
    groups, state, headdim = mix.get("ngroups", 1), mix.get("d_state", 128), mix.get("headdim", 64)
    heads = d_i // headdim
    return _Sizes(
        b=dtype_bytes, E=v.embed_dim, I_v=int(v.embed_dim * v.mlp_ratio), d_v=v.embed_dim // v.num_heads,
        d=t.hidden_size, I=t.intermediate_size, L=t.num_hidden_layers, K=t.num_key_value_heads * head_dim,
        head_dim=head_dim, V=t.vocab_size, D_i=d_i, C=d_i + 2 * groups * state,
        D_in=2 * d_i + 2 * groups * state + heads, m_heads=heads, m_headdim=headdim, m_state=state,
        chunk=mix.get("chunk_size", 256), has_mixer=t.mixer_type == "mamba2",
    )


def _vision_moments(s: _Sizes, patches: int, tokens: int, persistent: float) -> dict[str, float]:
    """Bytes live at the vision tower's worst moments, on top of `persistent` (what the caller already holds).

    Always live: rotary cos/sin (2 x P x d_v, float32 whatever the dtype) and the (P, 2) int64 positions.

    - attention rotary (inside a block, rotating the keys): the block input and norm1 output (2 P E b), the fused
      qkv output (3 P E b), q and k upcast to float32 (2 P E f, only when b < 4: `.float()` is a no-op in fp32),
      the rotated queries (P E f) and the three temporaries of rotating the keys (k*cos, rotate_half(k),
      rotate_half(k)*sin: 3 P E f). The worst vision moment in bf16.
    - attention output (the output projection): block input, norm1, qkv (5 P E b), rotated q and k back in the
      model dtype (2 P E b), the per-frame attention outputs, their concatenation and the projection (3 P E b).
    - mlp: the block input, the post-attention sum and the norm2 output (3 P E b) and three P x I_v tensors
      (fc1 output, then quick_gelu's 1.702x / sigmoid / product: two of them alive at a time besides fc1).
    - merger: the last hidden states and their LayerNorm (2 P E b) and fc1/GELU over the merged tokens (2 M 4E b
      = 2 P E b); or, at fc2, three of those and its M x d output.
    """
    P, M, E, b, f = patches, tokens, s.E, s.b, 4
    always = persistent + 2 * P * s.d_v * f + P * 2 * 8
    upcast = 2 * P * E * f if b < 4 else 0
    return {
        "vision attention rotary": always + P * E * (2 * b + 3 * b + f + 3 * f) + upcast,
        "vision attention output": always + 10 * P * E * b,
        "vision mlp": always + 3 * P * E * b + 3 * P * s.I_v * b,
        "vision merger": always + max(4 * P * E * b, 3 * P * E * b + M * s.d * b),
    }


def _mixer_piece_bytes(s: _Sizes, p: int, conv_state_alive: bool) -> float:
    """Worst temporaries of one no-grad Mamba-2 call on p tokens (`Mamba2Mixer._forward_torch`), bytes.

    - conv: in_proj output (p D_in b) and, in the depthwise conv, the padded input, the running sum, the tap
      product and its masked copy (4 p C b; with no packed-sequence ids F.conv1d needs only input and output).
    - scan: in_proj output, the activated conv output (p C b, alive through x/B/C views), the output y
      (p D_i b) and the SSD's float32 work on one group of chunks (`ssd._DEFAULT_MAX_BLOCK_ELEMENTS` bounds it,
      but a group holds at least one chunk): the intra-chunk decay/score block (chunks x heads x chunk^2 x f),
      three group x D_i x f tensors (x*dt in chunks, the intra-chunk output, the state output) and the chunk
      states (chunks x heads x headdim x d_state x f).
    - norm (gated RMSNorm in float32): in_proj output, y, and float32 work of 3 p D_i f in bf16 (y and z upcast,
      silu(z); then y, silu(z) and their product) or 2 p D_i f in fp32 (no upcast copies: silu(z) and product).
    `conv_state_alive`: without packed-sequence ids the returned conv state is a view of the padded conv input,
    which then stays alive (p C b) until the mixer returns (the streaming path).
    """
    b, f = s.b, 4
    chunks_per_group = max(1, SSD_BLOCK_ELEMENTS // (s.m_heads * s.chunk * s.chunk))
    group = min(p, chunks_per_group * s.chunk)
    n_chunks = -(-group // s.chunk)
    scan_work = (n_chunks * s.m_heads * s.chunk**2 * f + 3 * group * s.D_i * f
                 + n_chunks * s.m_heads * s.m_headdim * s.m_state * f)
    held = p * s.C * b if conv_state_alive else 0
    conv = p * s.D_in * b + (2 if conv_state_alive else 4) * p * s.C * b
    scan = p * s.D_in * b + p * s.C * b + p * s.D_i * b + scan_work + held
    norm = p * s.D_in * b + p * s.D_i * b + (3 if b < 4 else 2) * p * s.D_i * f + held
    return max(conv, scan, norm)


def _mixer_layer_moments(s: _Sizes, m: int, persistent: float, stream_copy: bool, conv_state_alive: bool
                         ) -> dict[str, float]:
    """Worst moments of one Mamba block (`VisionMixerBlock`) over m video tokens, without autograd.

    Live besides `persistent`: the layer's input V (m d b; not counted again when it is the stream itself,
    `stream_copy=False`), then either the block's RMSNorm temporaries (float32 copy and normalised values,
    2 m d f), or, while the mixer runs, the normalised input (m d b) plus one piece's temporaries
    (`_mixer_piece_bytes`) and, from the second piece on, the mixer's full-length output (m d b; allocated after
    the first piece), or, at the residual add, the mixer output and the new V (2 m d b).
    """
    layer_input = m * s.d * s.b if stream_copy else 0
    base = persistent + layer_input + m * s.d * s.b  # + the normalised input
    if not MIXER_PIECE or m <= MIXER_PIECE:  # one call: its output appears only after its temporaries are gone
        mixer = base + _mixer_piece_bytes(s, m, conv_state_alive)
    else:
        later = min(MIXER_PIECE, m - MIXER_PIECE)
        mixer = max(base + _mixer_piece_bytes(s, MIXER_PIECE, conv_state_alive),
                    base + m * s.d * s.b + _mixer_piece_bytes(s, later, conv_state_alive))
    return {
        "mixer rmsnorm": persistent + layer_input + 2 * m * s.d * 4,
        "mixer": mixer,
        "mixer residual": persistent + layer_input + 2 * m * s.d * s.b,
    }


def _kv_bytes(s: _Sizes, tokens: int, layers: int | None = None) -> float:
    """Keys and values of `tokens` tokens in `layers` layers (default all): 2 x K x b per token and layer."""
    return (s.L if layers is None else layers) * 2 * tokens * s.K * s.b


@lru_cache(maxsize=16)
def _parameter_count(profile_name: str, system: str) -> int:
    """Exact parameter count, from the model built on the meta device (no memory, a fraction of a second)."""
    from transformers import Qwen2VLForConditionalGeneration

    from vamba import VambaForConditionalGeneration

    from .configs import get_profile_config

    profile = get_profile_config(profile_name)
    with torch.device("meta"):
        if system.startswith("qwen2vl"):
            model = Qwen2VLForConditionalGeneration(profile.qwen2vl)
        else:
            model = VambaForConditionalGeneration(profile.vamba)
    return sum(p.numel() for p in model.parameters())


def memory_account(
    profile: Profile,
    system: str,
    frames: int,
    height: int | None = None,
    width: int | None = None,
    chunk_frames: int = 32,
    text_tokens: int | None = None,
    dtype: torch.dtype | None = None,
    logits_upcast: bool = False,
) -> MemoryAccount:
    """Predicted peak memory of a prefill of `frames` frames for `system` at `profile`'s size.

    Args:
        profile: a `vamba.efficiency.configs.Profile` (the two same-size configs and the default frame size).
        system: "qwen2vl" (fair baseline: `logits_to_keep=1`), "qwen2vl_stock" (logits for every position, as
            the stock forward computes them), "vamba" (full prefill) or "vamba_stream" (streaming prefill of
            `chunk_frames` frames per chunk, then the prompt).
        frames: sampled frames; height/width: frame size before the resize (default: the profile's, 640x360).
        text_tokens: prompt tokens besides the video (default: the profile's).
        dtype: model dtype (default: the profile's; bf16 at 7B, fp32 on CPU).
        logits_upcast: also count a float32 copy of the stock logits, as the transformers of the paper's time made
            (transformers 5.23 does not).

    Returns:
        A `MemoryAccount`. Formulas:

        Qwen2-VL, S = M + T + 3 tokens. Before the vision tower the inputs embeddings exist (S d b).
        Vision moments: see `_vision_moments`. Language model: the vision output is kept by the forward for the
        whole language model (its last hidden state P E b and its merged output M d b) next to the video
        embeddings copied out of it (M d b), the inputs embeddings after the video scatter (S d b), rotary
        cos/sin (2 S head_dim b) and 3-D positions (3 S int64). The worst moment is the last layer's MLP: the KV
        cache of all layers (2 L K b S), the layer input, the post-attention sum, the norm output (3 S d b)
        and 3 S I b of MLP intermediates. The head moment (stock only; fair keeps one row) holds the KV cache,
        the final hidden states (S d b) and the logits S V b (+ S V 4 with `logits_upcast`).

        Vamba full prefill: `_encode` hands a single kind's pixel values to the vision tower without a copy.
        The language model holds the vision output (M d b), the video stream built from it (M d b) and
        its int64 positions/indices (5 M x 8 bytes) and, per layer, the video keys/values (2 K b per token,
        the cache). The worst language-model moment is the last Mamba block (layer L-2: L-1 layers of keys and
        values exist), see `_mixer_layer_moments`.

        Vamba streaming, chunks of c = min(K frames, F) frames (M_c tokens, P_c patches): the vision and the
        mixer moments of one chunk on top of the keys/values of the chunks before it (the cache is preallocated
        at its final size and filled in place, so there is no final concatenation) plus the last chunk's
        stream (M_c d b).

    Raises:
        ValueError: for an unknown system.
    """
    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; choose one of {SYSTEMS}")
    dtype = dtype or profile.dtype
    b = torch.empty(0, dtype=dtype).element_size()
    s = _sizes(profile, b)
    geom = profile_geometry(profile, frames, height, width)
    T = profile.text_tokens if text_tokens is None else text_tokens
    P, M = geom.patches, geom.tokens
    pixels = P * geom.patch_row * b
    weights = _parameter_count(profile.name, "qwen2vl" if system.startswith("qwen2vl") else "vamba") * b
    moments: dict[str, float] = {}
    kv_at: dict[str, float] = {}
    logits_at: dict[str, float] = {}

    def add(name: str, nbytes: float, kv: float = 0.0, logits: float = 0.0) -> None:
        moments[name], kv_at[name], logits_at[name] = nbytes, kv, logits

    if system.startswith("qwen2vl"):
        S = M + T + 3
        seq = S
        inputs = pixels + 2 * S * 8  # input_ids and mm_token_type_ids, int64
        for name, nbytes in _vision_moments(s, P, M, persistent=S * s.d * b).items():
            add(name, nbytes)
        lm_persistent = P * s.E * b + 2 * M * s.d * b + S * s.d * b + 2 * S * s.head_dim * b + 3 * S * 8
        kv_all = _kv_bytes(s, S)
        add("lm last-layer mlp", lm_persistent + kv_all + 3 * S * s.d * b + 3 * S * s.I * b, kv=kv_all)
        stock = system == "qwen2vl_stock"
        logits = (S if stock else 1) * s.V * (b + (4 if logits_upcast and stock else 0))
        add("lm head", kv_all + S * s.d * b + logits, kv=kv_all, logits=logits)
        kv_final = kv_all
    else:
        N = T + 3
        seq = N
        inputs = pixels + N * 8
        text_kv = _kv_bytes(s, N)
        text_prefill = N * s.d * b * 6 + N * s.I * b * 3 + text_kv + s.V * b  # text path: small
        if system == "vamba":
            # `_encode` passes a single kind's pixels to the tower as they are (no concatenated copy).
            for name, nbytes in _vision_moments(s, P, M, persistent=0).items():
                add(name, nbytes)
            lm_persistent = 2 * M * s.d * b + 5 * M * 8
            if s.has_mixer and s.L > 1:
                kv = _kv_bytes(s, M, s.L - 1)
                for name, nbytes in _mixer_layer_moments(s, M, lm_persistent + kv, stream_copy=s.L > 2,
                                                         conv_state_alive=False).items():
                    add(f"lm {name}", nbytes, kv=kv)
            kv_video = _kv_bytes(s, M)
            add("lm text path", lm_persistent + M * s.d * b + kv_video + text_prefill, kv=kv_video + text_kv)
            kv_final = kv_video + text_kv
        else:
            tp = profile.vamba.vision_config.temporal_patch_size
            step = max(1, chunk_frames // tp)  # temporal patches per chunk, as encode_video_streaming
            t = geom.grid_thw[0]
            per_t = geom.patches_per_temporal_patch // geom.merge**2  # visual tokens per temporal patch
            done = 0  # tokens of the chunks already through (their keys/values are in the per-chunk lists)
            M_c = M_c_prev = 0
            for t0 in range(0, t, step):
                t_c = min(step, t - t0)
                M_c = t_c * per_t
                kv_before = _kv_bytes(s, done)
                # The previous chunk's stream (output of the last Mamba block) stays referenced until this chunk's
                # vision output replaces it.
                previous = M_c_prev * s.d * b
                chunk = _vision_moments(s, t_c * geom.patches_per_temporal_patch, M_c,
                                        persistent=kv_before + previous)
                for name, nbytes in chunk.items():
                    if nbytes > moments.get(f"chunk {name}", -1):
                        add(f"chunk {name}", nbytes, kv=kv_before)
                if s.has_mixer and s.L > 1:
                    kv = kv_before + _kv_bytes(s, M_c, s.L - 1)
                    mixer = _mixer_layer_moments(s, M_c, kv, stream_copy=True, conv_state_alive=True)
                    for name, nbytes in mixer.items():
                        if nbytes > moments.get(f"chunk {name}", -1):
                            add(f"chunk {name}", nbytes, kv=kv)
                done += M_c
                M_c_prev = M_c
            kv_video = _kv_bytes(s, M)
            add("filled cache", kv_video + M_c * s.d * b, kv=kv_video)
            add("text prefill", kv_video + text_prefill, kv=kv_video + text_kv)
            kv_final = kv_video + text_kv
        logits = s.V * b  # logits_to_keep=1

    phase = max(moments, key=moments.get)
    peak = moments[phase]
    return MemoryAccount(
        system=system,
        frames=frames,
        visual_tokens=M,
        sequence=seq,
        dtype_bytes=b,
        weights_gb=weights / GB,
        inputs_gb=inputs / GB,
        kv_cache_gb=kv_final / GB,
        logits_gb=logits / GB,
        peak_gb=peak / GB,
        peak_phase=phase,
        kv_gb_at_peak=kv_at[phase] / GB,
        logits_gb_at_peak=logits_at[phase] / GB,
        activations_gb=(peak - kv_at[phase] - logits_at[phase]) / GB,
        max_activations_gb=max(v - kv_at[k] - logits_at[k] for k, v in moments.items()) / GB,
        moments_gb={k: v / GB for k, v in moments.items()},
    )
