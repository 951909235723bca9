"""The one video decoder and frame sampler of the project: file -> sampled, resized RGB frames.

Training data, every benchmark and the chat CLI read video through `load_video`, so frame choice, resizing and
error handling are identical everywhere (the original release pasted a decord loader into seven eval scripts).

Pipeline::

    open (backend) -> metadata (frame count, fps, size) -> target size (Qwen2-VL rules)
        -> indices (`sample_indices`, token budget for "auto") -> decode only those frames -> resize in chunks

Sampling (`sample_indices`, a pure function):

- ``uniform``: the middle frame of N equal segments, index ``floor((i + 0.5) * total / N)``.
- ``fps``: N = duration * fps, capped by ``max_frames``; also segment middles.
- ``auto``: as many frames as fit ``token_budget`` visual tokens at the chosen resolution
  (`frames_for_token_budget`), capped by ``max_frames``; the release's ``video_num_frames: auto``.
- ``linspace``: the original release's evaluation sampler (`linspace_indices`): index ``(s[i] + s[i+1]) // 2`` with
  ``s = torch.linspace(0, total, N + 1)`` truncated to integers, every frame when ``N >= total``, and the last frame
  of an odd count dropped (the release's processor does that). The count is not rounded first.
- a callable ``sampler(total, fps) -> indices`` replaces the mode (a benchmark's own frame rule, e.g. MVBench's).

Pre-resize (``pre_resize=(longest, shortest)``): the release's evaluation first resizes each frame by its edge rule
(`edge_resize_size`), then the pixel rule (`target_size`) applies to that size, both bicubic, as two resizes.

Counts are rounded down to a multiple of the temporal patch (2), minimum 2, because Qwen2-VL's vision tower
groups frames in pairs. A video with fewer frames than requested yields all its frames, and when that count is
odd the last index is repeated once so the count stays even (the duplicate is visible in ``indices``).

Backends:

- ``pyav`` (the default): our own seek planner. It scans the packet index once (cheap: no decoding), then for each
  wanted frame seeks to the preceding keyframe only when that skips more than a few frames compared with decoding
  forward from where the decoder already is; so sparse sampling decodes only keyframe-to-sample spans and dense
  sampling is one sequential pass, never more. Unwanted frames are never converted to RGB (the YUV->RGB
  conversion costs about 1.5x the decoding of a frame), and non-reference frames that are not wanted are not even
  decoded (``skip_frame="NONREF"``; nothing depends on them). Measured with one thread on a 10-minute 640x360
  h264 file (``scripts/bench_decode.py``), this beats decord's ``get_batch`` at every frame count, which is why it
  is the default.
- ``decord``: ``VideoReader.get_batch``, in chunks of indices so memory stays bounded.
- ``torchcodec``: ``VideoDecoder.get_frames_at``, only where torchcodec imports.

``backend=None`` tries pyav, then decord (each once; a file one of them cannot open or decode is handed to the
other) and raises `VideoReadError` naming the file and every backend's reason. Any failure to read a file
(missing, empty, truncated past its index, not a video) is a `VideoReadError` (a ``ValueError``); invalid arguments
are plain ``ValueError``.

Frame identity: index i is the i-th frame in presentation (pts) order, as decord and torchcodec number frames, so
the same indices give the same frames on every backend. Timestamps are seconds from the first frame: pts-based
for pyav and torchcodec, decord's own per-frame timestamps for decord. If a wanted frame cannot be decoded (a
corrupt packet), pyav returns the next decodable frame in its place, and frames past the last decodable one repeat
it; ``indices`` and ``timestamps`` then name the frames actually returned and ``stats["missing_frames"]`` counts
the substitutions. A file truncated after its index (e.g. an mp4 written with faststart) is read up to the cut;
one truncated before its index (a plain mp4 cut short loses its trailing moov atom) cannot be opened.

Memory: frames are resized as they arrive, in chunks, into one preallocated output array, so the peak is the
sampled frames at the output size plus a small staging buffer, however long the file.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

try:  # needs Pillow
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as _hf_smart_resize
except ImportError:  # pragma: no cover - depends on the installed extras
    try:  # needs torchvision
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as _hf_smart_resize
    except ImportError:
        _hf_smart_resize = None

__all__ = [
    "VideoFrames",
    "VideoReadError",
    "available_backends",
    "clip_frames",
    "edge_resize_size",
    "frames_for_token_budget",
    "linspace_indices",
    "load_video",
    "resize_frames",
    "sample_indices",
    "smart_resize",
    "target_size",
]

# Qwen2-VL's video defaults (its video processor config): 128 to 768 merged 28x28 patches per frame.
DEFAULT_MIN_PIXELS = 128 * 28 * 28
DEFAULT_MAX_PIXELS = 768 * 28 * 28
# Frame cap for "fps" and "auto" when max_frames is not given: the most the paper feeds at inference.
DEFAULT_MAX_FRAMES = 1024
# Frames for "uniform" when num_frames is not given (a quick look; configs always set their own).
DEFAULT_NUM_FRAMES = 32
TEMPORAL_PATCH = 2
SAMPLE_MODES = ("uniform", "fps", "auto", "linspace")
BACKENDS = ("pyav", "decord", "torchcodec")
# Default order when backend=None (see the module docstring for why pyav comes first).
DEFAULT_BACKEND_ORDER = ("pyav", "decord")

# Elements (frames x H x W x 3) resized per chunk (16 MB of uint8): bounds resize temporaries and staging memory.
_RESIZE_CHUNK_ELEMENTS = 1 << 24


class VideoReadError(ValueError):
    """A video file that cannot be read. The message names the file and the reason (one per backend tried)."""


@dataclass
class VideoFrames:
    """Sampled frames of one video.

    Attributes:
        frames: (T, H, W, 3) uint8 RGB, resized to the target size unless ``resize=False``.
        timestamps: (T,) float64 seconds of each frame from the first frame of the video.
        indices: (T,) int64 frame index (presentation order) of each returned frame.
        fps: native average frame rate.
        num_total_frames: frames in the video.
        duration: seconds covered by the video.
        backend: the backend that decoded the frames.
        stats: decoder counters (e.g. pyav: ``packets_decoded``, ``frames_decoded``, ``frames_converted``,
            ``seeks``), for tests, benchmarks and logs.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    indices: np.ndarray
    fps: float
    num_total_frames: int
    duration: float
    backend: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    def to_torch(self) -> torch.Tensor:
        """(T, 3, H, W) uint8 tensor sharing memory with ``frames`` (a permuted view: call ``.contiguous()`` if a
        consumer needs it). This is the layout transformers' Qwen2-VL video processor accepts."""
        return torch.from_numpy(self.frames).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------------------


def _even_count(n: int) -> int:
    """Round a requested frame count down to a multiple of the temporal patch, minimum one patch."""
    return max(TEMPORAL_PATCH, (int(n) // TEMPORAL_PATCH) * TEMPORAL_PATCH)


def _segment_middles(total: int, n: int) -> np.ndarray:
    """Indices of the middle frame of n equal segments of [0, total); all frames (+ even pad) when total < n."""
    if total >= n:
        i = np.arange(n, dtype=np.int64)
        # floor((i + 0.5) * total / n) in exact integer arithmetic (no float rounding at large totals).
        return ((2 * i + 1) * total) // (2 * n)
    idx = np.arange(total, dtype=np.int64)
    if total % TEMPORAL_PATCH:
        # Qwen2-VL consumes frames in pairs: repeat the last frame rather than drop a real one.
        idx = np.concatenate([idx, np.full(TEMPORAL_PATCH - total % TEMPORAL_PATCH, total - 1, dtype=np.int64)])
    return idx


def linspace_indices(total: int, n: int) -> np.ndarray:
    """The original release's uniform sampler, exactly: midpoints of ``torch.linspace(0, total, n + 1)`` cast to
    integers (truncated, as the release's ``dtype=int`` does), or every frame when ``n >= total``; then the last
    frame of an odd count is dropped, as the release's processor does before pairing frames. (T,) int64, T even."""
    if n < total:
        s = torch.linspace(0, total, n + 1, dtype=torch.int64).numpy()
        idx = (s[:-1] + s[1:]) // 2
    else:
        idx = np.arange(total, dtype=np.int64)
    if len(idx) % TEMPORAL_PATCH:
        idx = idx[: len(idx) - len(idx) % TEMPORAL_PATCH]
    if not len(idx):
        raise ValueError(f"the release's sampler keeps no frame of a {total}-frame video (one frame, dropped as odd)")
    return idx.astype(np.int64)


def sample_indices(
    num_total_frames: int,
    native_fps: float,
    sample: str = "uniform",
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
) -> np.ndarray:
    """Which frames to decode: the project's one frame sampler (pure, no I/O).

    Args:
        num_total_frames: frames in the video (> 0).
        native_fps: the video's frame rate (used by ``fps``).
        sample: ``"uniform"`` (``num_frames`` segment middles), ``"fps"`` (``fps`` frames per second of video, at
            most ``max_frames``), ``"linspace"`` (the release's sampler, `linspace_indices`), or ``"auto"``
            (like uniform; ``num_frames`` must be the count derived from the
            token budget, see `frames_for_token_budget`; `load_video` does that).
        num_frames: requested count for ``uniform`` / ``auto``.
        fps: target frame rate for ``fps``.
        max_frames: cap on the count (all modes); None means no cap.

    Returns:
        (T,) int64 nondecreasing frame indices; T is even and >= 2. Indices are the middle frame of T equal
        segments, ``floor((i + 0.5) * total / T)``. When the video has fewer frames than requested, all frames are
        returned, and if their number is odd the last index is repeated once so T stays even.
    """
    total = int(num_total_frames)
    if total <= 0:
        raise ValueError(f"num_total_frames must be positive, got {num_total_frames}")
    if sample not in SAMPLE_MODES:
        raise ValueError(f"sample must be one of {SAMPLE_MODES}, got {sample!r}")
    if sample == "fps":
        if fps is None or fps <= 0:
            raise ValueError(f"sample='fps' needs a positive fps, got {fps}")
        if not native_fps or native_fps <= 0:
            raise ValueError(f"sample='fps' needs the video's native fps, got {native_fps}")
        # A tiny epsilon so e.g. 10 s * 2 fps computed as 19.999999 still gives 20 frames.
        n = math.floor(total / native_fps * fps + 1e-6)
    else:
        if num_frames is None or num_frames <= 0:
            raise ValueError(f"sample={sample!r} needs a positive num_frames, got {num_frames}")
        n = int(num_frames)
    if max_frames is not None:
        if max_frames < TEMPORAL_PATCH:
            raise ValueError(f"max_frames must be >= {TEMPORAL_PATCH}, got {max_frames}")
        n = min(n, int(max_frames))
    if sample == "linspace":
        return linspace_indices(total, n)
    return _segment_middles(total, _even_count(n))


def clip_frames(num_total_frames: int, native_fps: float, start: float | None = None,
                end: float | None = None) -> tuple[int, int]:
    """First and last frame index (inclusive) of the window [start, end] seconds; the whole video for None.

    Raises:
        ValueError: start >= end, a negative start, a window that starts after the video ends, or bounds on a
            video with unknown fps.
    """
    last_frame = int(num_total_frames) - 1
    if start is None and end is None:
        return 0, last_frame
    if not native_fps or native_fps <= 0:
        raise ValueError(f"clip bounds need the video's fps, got {native_fps}")
    if start is not None and start < 0:
        raise ValueError(f"clip start must be >= 0 seconds, got {start}")
    if start is not None and end is not None and start >= end:
        raise ValueError(f"clip start ({start}s) must be before its end ({end}s)")
    first = 0 if start is None else int(round(start * native_fps))
    last = last_frame if end is None else min(last_frame, int(round(end * native_fps)))
    if first > last_frame:
        raise ValueError(f"clip starts at {start}s, after the video's last frame ({last_frame / native_fps:.2f}s)")
    return first, max(first, last)


def frames_for_token_budget(
    token_budget: int, height: int, width: int, patch: int = 14, merge: int = 2, temporal_patch: int = 2
) -> int:
    """Most frames whose visual tokens fit ``token_budget`` at a frame size of (height, width).

    Qwen2-VL turns every ``temporal_patch`` frames into (H / (patch * merge)) * (W / (patch * merge)) tokens, so
    the answer is ``floor(budget / tokens_per_group) * temporal_patch`` (0 if not even one group fits). height and
    width are the sizes after resizing and must be multiples of ``patch * merge`` (28).
    """
    factor = patch * merge
    if height % factor or width % factor:
        raise ValueError(f"frame size {height}x{width} is not a multiple of {factor}; resize first (target_size)")
    per_group = (height // factor) * (width // factor)
    return (int(token_budget) // per_group) * temporal_patch


# --------------------------------------------------------------------------------------------------------------
# Resizing
# --------------------------------------------------------------------------------------------------------------


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = DEFAULT_MIN_PIXELS,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Qwen2-VL's size rule: sides multiples of ``factor``, area within [min_pixels, max_pixels], aspect kept.

    Delegates to transformers' ``smart_resize`` (same signature) so the sizes can never drift from the model's
    processor. The fallback below is only for environments without Pillow/torchvision, where transformers'
    module cannot be imported; it implements the same rule and is checked against it in the tests.
    """
    if _hf_smart_resize is not None:
        h, w = _hf_smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
        return int(h), int(w)
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio of {height}x{width} is above 200")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:  # shrink by the area ratio, rounding down so the bound holds
        scale = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / scale / factor) * factor)
        w = max(factor, math.floor(width / scale / factor) * factor)
    elif h * w < min_pixels:  # grow by the area ratio, rounding up so the bound holds
        scale = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * scale / factor) * factor, math.ceil(width * scale / factor) * factor
    return h, w


def edge_resize_size(height: int, width: int, longest_edge: int, shortest_edge: int = 256) -> tuple[int, int]:
    """The original release's frame pre-resize (its ``get_resize_output_image_size``), as (height, width).

    If the frame is landscape or square and wider than ``longest_edge``, the width becomes ``longest_edge`` and the
    height ``int(longest_edge / (width / height))``; if portrait and taller, the same with the sides swapped; then
    each side is raised to at least ``shortest_edge`` independently (so a small frame is stretched, as there).
    """
    aspect = width / height
    if width >= height and width > longest_edge:
        width, height = longest_edge, int(longest_edge / aspect)
    elif height > width and height > longest_edge:
        height, width = longest_edge, int(longest_edge * aspect)
    return max(int(height), shortest_edge), max(int(width), shortest_edge)


def target_size(
    height: int,
    width: int,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    shortest_edge: int | None = None,
    longest_edge: int | None = None,
    factor: int = 28,
) -> tuple[int, int]:
    """Output (height, width) for a native frame size: multiples of ``factor`` (28 = patch 14 x merge 2).

    - Edge rule (the original release's options): scale so the short side equals ``shortest_edge`` unless that
      makes the long side exceed ``longest_edge``, in which case the long side is set to ``longest_edge``; then
      round each side to the nearest multiple of 28 (never above ``longest_edge``, never below 28).
    - Pixel rule (Qwen2-VL's `smart_resize`, which also does the rounding): area within [min_pixels, max_pixels],
      applied to the edge-scaled size.

    Defaults: with no option at all, Qwen2-VL's video bounds (128 to 768 merged patches, 100,352 to 602,112
    pixels; 640x360 -> 644x364 = 149.5 tokens per frame). When an edge option is given, pixel bounds apply only
    if given explicitly, so an explicit edge request is not silently overridden by the default area cap.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"invalid frame size {height}x{width}")
    edges = shortest_edge is not None or longest_edge is not None
    if not edges:
        lo = DEFAULT_MIN_PIXELS if min_pixels is None else min_pixels
        hi = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    else:
        lo = factor * factor if min_pixels is None else min_pixels
        hi = 1 << 62 if max_pixels is None else max_pixels
    h, w = float(height), float(width)
    if edges:
        scale = 1.0
        if shortest_edge is not None:
            scale = shortest_edge / min(h, w)
        if longest_edge is not None and max(h, w) * scale > longest_edge:
            scale = longest_edge / max(h, w)
        h, w = h * scale, w * scale
    # smart_resize rounds the (scaled, unrounded) sides to the nearest multiples of factor and only rescales when
    # the area leaves [lo, hi]; rounding before it would distort small frames (48x64 would become 56x56).
    oh, ow = smart_resize(h, w, factor=factor, min_pixels=lo, max_pixels=hi)
    if longest_edge is not None:  # rounding up may have crossed the cap: the cap wins
        cap = max(factor, (longest_edge // factor) * factor)
        oh, ow = min(oh, cap), min(ow, cap)
    return int(oh), int(ow)


def _resize_into(src: np.ndarray, dst: np.ndarray) -> None:
    """Resize (N, h, w, 3) uint8 ``src`` into the preallocated (N, H, W, 3) uint8 ``dst`` (bicubic, antialiased).

    Runs torch's uint8 kernel on the channels-last view of the HWC frames (the path torchvision's ``Resize`` and
    transformers' fast processors use): no float copy, rounding and clamping to [0, 255] done in the kernel. It is
    ~20x faster than the float32 path on CPU (0.6 vs 13 ms per 640x360 frame) and differs from it by a mean of
    ~0.3 grey levels (intermediate rounding between the separable passes). antialias=True low-pass filters when
    shrinking, as PIL does in Qwen2-VL's reference processor.
    """
    n, h, w, _ = src.shape
    oh, ow = dst.shape[1:3]
    if (h, w) == (oh, ow):
        dst[...] = src
        return
    step = max(1, _RESIZE_CHUNK_ELEMENTS // (max(h * w, oh * ow) * 3))
    for s in range(0, n, step):
        x = torch.from_numpy(np.ascontiguousarray(src[s:s + step])).permute(0, 3, 1, 2)  # channels-last NCHW view
        try:
            y = F.interpolate(x, size=(oh, ow), mode="bicubic", align_corners=False, antialias=True)
        except (NotImplementedError, RuntimeError):  # no uint8 kernel for this build: float path, clamp by hand
            y = F.interpolate(x.float(), size=(oh, ow), mode="bicubic", align_corners=False, antialias=True)
            y = y.round_().clamp_(0, 255).to(torch.uint8)  # bicubic overshoots; a bare cast would wrap
        dst[s:s + step] = y.permute(0, 2, 3, 1).numpy()


def _resize_via(src: np.ndarray, dst: np.ndarray, mid_hw: tuple[int, int] | None) -> None:
    """`_resize_into`, through an intermediate size first when one is given (the release's pre-resize)."""
    if mid_hw is None or mid_hw in (src.shape[1:3], dst.shape[1:3]):
        _resize_into(src, dst)
        return
    tmp = np.empty((src.shape[0], *mid_hw, 3), dtype=np.uint8)
    _resize_into(src, tmp)
    _resize_into(tmp, dst)


def resize_frames(frames: np.ndarray | torch.Tensor, height: int, width: int) -> np.ndarray:
    """Resize (T, H, W, 3) uint8 frames to (T, height, width, 3) uint8 with bicubic + antialias interpolation.

    Works in chunks of frames so temporaries stay small whatever T is; see `_resize_into` for the kernel.
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.cpu().numpy()
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {tuple(frames.shape)}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    out = np.empty((frames.shape[0], height, width, 3), dtype=np.uint8)
    _resize_into(frames, out)
    return out


class _FrameSink:
    """Receives decoded RGB frames slot by slot (in increasing slot order) and writes them, resized, into one
    preallocated (U, H', W', 3) array. Native-size frames wait in a small staging buffer so resizing runs batched;
    the whole video is never held at native size."""

    def __init__(self, count: int, src_hw: tuple[int, int], dst_hw: tuple[int, int],
                 mid_hw: tuple[int, int] | None = None):
        self.out = np.empty((count, *dst_hw, 3), dtype=np.uint8)
        self.src_hw, self.dst_hw = src_hw, dst_hw
        self.mid_hw = None if mid_hw in (None, src_hw) else mid_hw  # resize through this size first
        self.direct = src_hw == dst_hw and self.mid_hw is None
        per = max(src_hw[0] * src_hw[1], dst_hw[0] * dst_hw[1]) * 3
        self.capacity = max(1, min(count, _RESIZE_CHUNK_ELEMENTS // per))
        self.staging = None if self.direct else np.empty((self.capacity, *src_hw, 3), dtype=np.uint8)
        self.pending: list[int] = []
        self.copies: list[tuple[int, int]] = []  # (dst slot, src slot), applied at finish

    def put(self, slot: int, rgb: np.ndarray) -> None:
        if rgb.shape[:2] != self.src_hw:  # the stream changed resolution mid-file: resize this one on its own
            _resize_via(rgb[None], self.out[slot:slot + 1], self.mid_hw)
        elif self.direct:
            self.out[slot] = rgb
        else:
            self.staging[len(self.pending)] = rgb
            self.pending.append(slot)
            if len(self.pending) == self.capacity:
                self._flush()

    def put_batch(self, slots: Sequence[int], frames: np.ndarray) -> None:
        for s, f in zip(slots, frames):
            self.put(s, f)

    def reset(self) -> None:
        """Forget pending work before slots are written again from the start."""
        self.pending, self.copies = [], []

    def copy(self, dst_slot: int, src_slot: int) -> None:
        """Fill ``dst_slot`` with the frame already put in ``src_slot`` (used when a frame is missing)."""
        self.copies.append((dst_slot, src_slot))

    def _flush(self) -> None:
        if self.pending:
            n = len(self.pending)
            first = self.pending[0]
            if self.pending == list(range(first, first + n)):  # the usual case: contiguous slots, no gather
                _resize_via(self.staging[:n], self.out[first:first + n], self.mid_hw)
            else:
                tmp = np.empty((n, *self.dst_hw, 3), dtype=np.uint8)
                _resize_via(self.staging[:n], tmp, self.mid_hw)
                self.out[self.pending] = tmp
            self.pending = []

    def finish(self) -> np.ndarray:
        self._flush()
        for dst, src in self.copies:
            self.out[dst] = self.out[src]
        self.staging = None
        return self.out


# --------------------------------------------------------------------------------------------------------------
# Backends. Each reader opens the file in __init__ (raising on failure), exposes metadata, and `read(indices, sink)`
# decodes the sorted unique `indices` into sink slots 0..U-1, returning (actual index, timestamp) per slot.
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Meta:
    num_frames: int
    fps: float
    duration: float
    height: int
    width: int


class _Reader:
    name = ""
    meta: _Meta
    stats: dict[str, Any]

    def read(self, indices: np.ndarray, sink: _FrameSink) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _NoTimestamps(Exception):
    """Decoded frames carry no pts, so they cannot be matched to the packet index."""


def _import_av():
    import av

    return av


class _PyAVReader(_Reader):
    """PyAV with a seek planner: decode only keyframe-to-sample spans, never more than one pass (module docstring).

    The planner needs the presentation timestamp of every frame and where the keyframes are. One demux pass over
    the packets gives both without decoding anything (milliseconds for a 10-minute file; decord does the same scan
    when it opens a file). If timestamps are missing or repeated (some raw or broken streams), frames are counted
    in decode output order instead, in one sequential pass with no seeking.
    """

    name = "pyav"

    def __init__(self, path: str, threads: int = 0):
        av = _import_av()
        self.av, self.path, self.threads = av, path, int(threads)
        self.stats = {"packets_decoded": 0, "frames_decoded": 0, "frames_converted": 0, "seeks": 0,
                      "decode_errors": 0, "missing_frames": 0, "mode": "indexed"}
        self._scan()
        self.container = None

    # -- opening and scanning ----------------------------------------------------------------------------------

    def _open(self):
        container = self.av.open(self.path, mode="r")
        if not container.streams.video:
            container.close()
            raise VideoReadError(f"{self.path}: no video stream")
        stream = container.streams.video[0]
        cc = stream.codec_context
        # 0 lets FFmpeg pick a thread count. Frame threading ("AUTO") is what makes several threads pay off for
        # h264; with one thread the type does not matter.
        cc.thread_count = self.threads
        cc.thread_type = "AUTO" if self.threads != 1 else "SLICE"
        return container, stream

    def _scan(self) -> None:
        container, stream = self._open()
        try:
            pts, keys = [], []
            exact = True
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:  # flush packets; edit-list leftovers the decoder drops
                    continue
                p = packet.pts if packet.pts is not None else packet.dts
                if p is None:
                    exact = False
                    p = len(pts)
                pts.append(p)
                keys.append(bool(packet.is_keyframe))
            self.time_base = stream.time_base or Fraction(1, 1)
            rate = stream.average_rate or stream.guessed_rate
            height, width = stream.codec_context.height, stream.codec_context.width
        finally:
            container.close()
        if not pts:
            raise VideoReadError(f"{self.path}: no video packets (empty or truncated file)")
        if not height or not width:
            raise VideoReadError(f"{self.path}: video stream has no frame size")
        order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
        self.pts = np.asarray(pts, dtype=np.int64)[order]
        if exact and len(self.pts) > 1 and not np.all(np.diff(self.pts) > 0):
            exact = False  # repeated timestamps: a pts cannot name one frame
        self.exact = exact
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        self.key_idx = np.sort(rank[np.asarray(keys, dtype=bool)])  # presentation index of each keyframe
        if len(self.key_idx) == 0 or self.key_idx[0] != 0:
            # Treat the first frame as an entry point: seeking to it means "start of the file".
            self.key_idx = np.concatenate([[0], self.key_idx]).astype(np.int64)
        self.pos_of = {int(p): i for i, p in enumerate(self.pts.tolist())} if exact else {}
        n = len(self.pts)
        tb = float(self.time_base)
        span = float(self.pts[-1] - self.pts[0]) * tb if exact else 0.0
        fps = float(rate) if rate else (((n - 1) / span) if span > 0 else 0.0)
        if fps <= 0:
            fps = 25.0  # no rate anywhere: timestamps become index / 25, as FFmpeg's own default guess
        duration = span + 1.0 / fps if exact else n / fps
        self.meta = _Meta(num_frames=n, fps=fps, duration=duration, height=int(height), width=int(width))

    # -- decoding ----------------------------------------------------------------------------------------------

    def _seek_margin(self) -> int:
        # Decoding a frame costs ~0.1-1 ms; a seek costs a demuxer reposition plus refilling the decoder pipeline
        # (reorder delay + one frame per frame-thread). Below this many skipped frames, decoding on is cheaper.
        threads = self.threads if self.threads > 0 else (os.cpu_count() or 1)
        return 8 + 2 * threads

    def _reopen(self):
        if self.container is not None:
            self.container.close()
        self.container, self.stream = self._open()
        return self.container.demux(self.stream)

    def read(self, indices: np.ndarray, sink: _FrameSink) -> tuple[np.ndarray, np.ndarray]:
        try:
            got = None
            if self.exact:
                try:
                    got = self._read_indexed(indices, sink)
                except _NoTimestamps:  # packets had timestamps but decoded frames do not: count frames instead
                    self.exact = False
                    sink.reset()
            if got is None:
                got = self._read_sequential(indices, sink)
        finally:
            if self.container is not None:
                self.container.close()
                self.container = None
        if self.exact:
            times = (self.pts[got] - self.pts[0]).astype(np.float64) * float(self.time_base)
        else:
            times = got.astype(np.float64) / self.meta.fps
        return got, times

    def _decode(self, packet) -> list:
        self.stats["packets_decoded"] += packet.size > 0
        try:
            frames = packet.decode()
        except self.av.error.InvalidDataError:
            # A corrupt packet: FFmpeg conceals what it can in later frames; a missing frame is handled by the
            # caller (nearest later frame), so one bad packet does not fail the whole video.
            self.stats["decode_errors"] += 1
            return []
        self.stats["frames_decoded"] += len(frames)
        return frames

    def _to_rgb(self, frame) -> np.ndarray:
        self.stats["frames_converted"] += 1
        return frame.to_ndarray(format="rgb24")

    def _read_indexed(self, want: np.ndarray, sink: _FrameSink) -> np.ndarray:
        pts, keys, n = self.pts, self.key_idx, len(want)
        want_pts = pts[want]
        wanted = set(want_pts.tolist())
        got = np.empty(n, dtype=np.int64)
        margin = self._seek_margin()
        slot, cur = 0, -1  # next slot to fill; presentation index of the last frame the decoder returned
        backoff, check_overshoot, need_seek = 0, False, False
        packets = self._reopen()
        cc = self.stream.codec_context
        skip_mode = "DEFAULT"

        def keyframe_pos(i: int) -> int:
            return int(np.searchsorted(keys, i, side="right")) - 1  # keys[0] == 0, so always >= 0

        need_seek = keys[keyframe_pos(int(want[0]))] - cur > margin
        while slot < n:
            if need_seek:
                need_seek = False
                kpos = keyframe_pos(int(want[slot])) - backoff
                if kpos <= 0:
                    # File start: reopening is the one repositioning that cannot land late.
                    packets, check_overshoot, cur = self._reopen(), False, -1
                    cc = self.stream.codec_context
                else:
                    # backward=True lands on the last keyframe at or before the timestamp; flushes the decoder.
                    self.container.seek(int(pts[keys[kpos]]), backward=True, any_frame=False, stream=self.stream)
                    packets, check_overshoot, cur = self.container.demux(self.stream), True, int(keys[kpos]) - 1
                skip_mode = "DEFAULT"
                cc.skip_frame = skip_mode
                self.stats["seeks"] += 1
            packet = next(packets, None)
            if packet is None:  # end of file (the demuxer already yielded the flush packet)
                break
            # Non-reference frames that are not wanted need not be decoded at all: nothing else depends on them.
            mode = "DEFAULT" if packet.pts in wanted else "NONREF"
            if mode != skip_mode:
                cc.skip_frame = skip_mode = mode
            for frame in self._decode(packet):
                if slot == n:  # a packet can return several frames; the rest are past the last wanted one
                    break
                p = frame.pts
                if p is None:
                    raise _NoTimestamps
                if check_overshoot:
                    check_overshoot = False
                    if p > want_pts[slot]:
                        # The demuxer landed after the wanted frame (odd index or open GOP): step back a keyframe.
                        backoff += 1
                        need_seek = True
                        break
                idx = self.pos_of.get(p)
                if idx is None:
                    idx = max(0, int(np.searchsorted(pts, p, side="right")) - 1)
                if p >= want_pts[slot]:
                    rgb = None
                    first = slot
                    while slot < n and want_pts[slot] <= p:
                        if want_pts[slot] != p:
                            self.stats["missing_frames"] += 1  # undecodable: use the next frame that exists
                        if rgb is None:
                            rgb = self._to_rgb(frame)
                            sink.put(slot, rgb)
                        else:
                            sink.copy(slot, first)
                        got[slot] = idx
                        slot += 1
                    backoff = 0
                cur = max(cur, idx)
            if not need_seek and slot < n and backoff == 0:
                # Seek forward only past more than `margin` frames; a seek sets cur to just before its keyframe, so
                # the same keyframe is never sought twice. (With backoff > 0 we are deliberately decoding from an
                # earlier keyframe after an overshoot and must not jump forward again.)
                k = keys[keyframe_pos(int(want[slot]))]
                need_seek = k - cur > margin
        if slot < n:
            if slot == 0:
                raise VideoReadError(f"{self.path}: no frame could be decoded")
            # Frames past the last decodable one (a damaged tail): repeat the last frame we have.
            self.stats["missing_frames"] += n - slot
            for s in range(slot, n):
                sink.copy(s, slot - 1)
                got[s] = got[slot - 1]
        return got

    def _read_sequential(self, want: np.ndarray, sink: _FrameSink) -> np.ndarray:
        """Fallback without usable timestamps: frame i is the i-th frame the decoder returns; one pass, no seek."""
        self.stats["mode"] = "sequential"
        n = len(want)
        got = np.empty(n, dtype=np.int64)
        slot, i = 0, 0
        for packet in self._reopen():
            for frame in self._decode(packet):
                if slot < n and want[slot] == i:
                    sink.put(slot, self._to_rgb(frame))
                    got[slot] = i
                    slot += 1
                i += 1
            if slot == n:
                break
        if slot == 0:
            raise VideoReadError(f"{self.path}: no frame could be decoded")
        for s in range(slot, n):
            sink.copy(s, slot - 1)
            got[s] = got[slot - 1]
        return got


class _DecordReader(_Reader):
    """decord's VideoReader; indices are read with get_batch in chunks so memory stays bounded."""

    name = "decord"

    def __init__(self, path: str, threads: int = 0):
        import decord

        self.path = path
        self.vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=int(threads))
        n = len(self.vr)
        if n <= 0:
            raise VideoReadError(f"{path}: no frames")
        h, w = self.vr[0].shape[:2]  # decord exposes no frame size: decode the first frame once
        self.vr.seek(0)
        fps = float(self.vr.get_avg_fps() or 0.0) or 25.0
        t = self.vr.get_frame_timestamp([0, n - 1])
        duration = float(t[1, 1] - t[0, 0]) if t[1, 1] > t[0, 0] else n / fps
        self.t0 = float(t[0, 0])
        self.meta = _Meta(num_frames=n, fps=fps, duration=duration, height=int(h), width=int(w))
        self.stats = {}

    def read(self, indices: np.ndarray, sink: _FrameSink) -> tuple[np.ndarray, np.ndarray]:
        step = sink.capacity
        for s in range(0, len(indices), step):
            chunk = indices[s:s + step]
            sink.put_batch(range(s, s + len(chunk)), self.vr.get_batch(chunk.tolist()).asnumpy())
        times = self.vr.get_frame_timestamp(indices.tolist())[:, 0].astype(np.float64) - self.t0
        return indices.copy(), times

    def close(self) -> None:
        self.vr = None


class _TorchCodecReader(_Reader):
    """torchcodec's VideoDecoder (exact seek mode), only used where torchcodec imports."""

    name = "torchcodec"

    def __init__(self, path: str, threads: int = 0):
        from torchcodec.decoders import VideoDecoder

        self.path = path
        self.dec = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=int(threads), seek_mode="exact")
        md = self.dec.metadata
        n = int(md.num_frames or 0)
        if n <= 0:
            raise VideoReadError(f"{path}: no frames")
        fps = float(md.average_fps or 0.0) or 25.0
        duration = float(md.duration_seconds or n / fps)
        self.t0 = float(self.dec.get_frames_at(indices=[0]).pts_seconds[0])
        self.meta = _Meta(num_frames=n, fps=fps, duration=duration, height=int(md.height), width=int(md.width))
        self.stats = {}

    def read(self, indices: np.ndarray, sink: _FrameSink) -> tuple[np.ndarray, np.ndarray]:
        step = sink.capacity
        times = np.empty(len(indices), dtype=np.float64)
        for s in range(0, len(indices), step):
            batch = self.dec.get_frames_at(indices=indices[s:s + step].tolist())
            sink.put_batch(range(s, s + len(batch.data)), batch.data.numpy())
            times[s:s + len(batch.data)] = batch.pts_seconds.double().numpy() - self.t0
        return indices.copy(), times


_READERS: dict[str, Callable[[str, int], _Reader]] = {
    "pyav": _PyAVReader,
    "decord": _DecordReader,
    "torchcodec": _TorchCodecReader,
}
_IMPORTS = {"pyav": "av", "decord": "decord", "torchcodec": "torchcodec.decoders"}


@functools.lru_cache(maxsize=1)
def _importable() -> tuple[str, ...]:
    out = []
    for name in (*DEFAULT_BACKEND_ORDER, *[b for b in BACKENDS if b not in DEFAULT_BACKEND_ORDER]):
        try:
            importlib.import_module(_IMPORTS[name])
        except Exception:  # ImportError, or a native library that fails to load (torchcodec without FFmpeg)
            continue
        out.append(name)
    return tuple(out)


def available_backends() -> list[str]:
    """Backends that import here: pyav, decord, then torchcodec (opt-in: never tried by backend=None)."""
    return list(_importable())


# --------------------------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------------------------


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoReadError(f"{path}: file not found")
    if not os.path.isfile(path):  # directories, FIFOs, devices: a decoder could block forever on a pipe
        raise VideoReadError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"{path}: empty file (0 bytes)")


def _plan(
    meta: _Meta,
    sample: str,
    num_frames: int | None,
    fps: float | None,
    max_frames: int | None,
    token_budget: int | None,
    size_kwargs: dict[str, int | None],
    clip: tuple[float | None, float | None] = (None, None),
    sampler: Callable[[int, float], Sequence[int]] | None = None,
    pre_resize: tuple[int, int] | None = None,
) -> tuple[np.ndarray, tuple[int, int], tuple[int, int] | None]:
    """Frame indices, output size and pre-resize size (or None) for a video, from its metadata alone (no decoding).

    ``clip`` = (start, end) in seconds (either may be None): every sampling mode then runs on the frames of that
    window only (frames round(start * fps) .. round(end * fps)). ``sampler`` replaces mode and clip.
    """
    mid_hw = edge_resize_size(meta.height, meta.width, *pre_resize) if pre_resize else None
    out_hw = target_size(*(mid_hw or (meta.height, meta.width)), **size_kwargs)
    if sampler is not None:
        indices = np.asarray(sampler(meta.num_frames, meta.fps), dtype=np.int64).reshape(-1)
        if not len(indices) or indices.min() < 0 or indices.max() >= meta.num_frames:
            raise ValueError(f"the frame sampler gave {len(indices)} indices outside 0..{meta.num_frames - 1}"
                             if len(indices) else "the frame sampler gave no frame")
        return indices, out_hw, mid_hw
    first, last = clip_frames(meta.num_frames, meta.fps, *clip)
    if (first, last) != (0, meta.num_frames - 1):
        window = _Meta(last - first + 1, meta.fps, (last - first + 1) / meta.fps, meta.height, meta.width)
        indices, out_hw, _ = _plan(window, sample, num_frames, fps, max_frames, token_budget, size_kwargs,
                                   pre_resize=pre_resize)
        return indices + first, out_hw, mid_hw
    if sample == "auto":
        if token_budget is None or token_budget <= 0:
            raise ValueError("sample='auto' needs a positive token_budget")
        n = frames_for_token_budget(token_budget, *out_hw)
        if n < TEMPORAL_PATCH:
            raise ValueError(f"token_budget={token_budget} does not fit even {TEMPORAL_PATCH} frames at "
                             f"{out_hw[0]}x{out_hw[1]}; raise the budget or lower max_pixels")
        indices = sample_indices(meta.num_frames, meta.fps, "auto", num_frames=n,
                                 max_frames=max_frames or DEFAULT_MAX_FRAMES)
    elif sample == "fps":
        indices = sample_indices(meta.num_frames, meta.fps, "fps", fps=fps, max_frames=max_frames or DEFAULT_MAX_FRAMES)
    else:
        indices = sample_indices(meta.num_frames, meta.fps, sample, num_frames=num_frames or DEFAULT_NUM_FRAMES,
                                 max_frames=max_frames)
    return indices, out_hw, mid_hw


def load_video(
    path: str | os.PathLike,
    num_frames: int | None = None,
    fps: float | None = None,
    sample: str = "uniform",
    backend: str | None = None,
    max_frames: int | None = None,
    token_budget: int | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    shortest_edge: int | None = None,
    longest_edge: int | None = None,
    resize: bool = True,
    threads: int = 0,
    start: float | None = None,
    end: float | None = None,
    folder_fps: float | None = None,
    sampler: Callable[[int, float], Sequence[int]] | None = None,
    pre_resize: tuple[int, int] | None = None,
) -> VideoFrames:
    """Read a video file and return sampled RGB frames (see the module docstring for the full contract).

    ``path`` may also be a folder of frame images (MVBench's Episodic Reasoning: ``00001.jpg``, ...) sampled at
    ``folder_fps`` frames per second: the same sampler and resize rules apply, images are read with Pillow.

    Args:
        path: video file.
        num_frames: frame count for ``sample="uniform"`` (default 32); ignored by ``fps`` and ``auto``.
        fps: target frame rate for ``sample="fps"``.
        sample: ``"uniform"``, ``"fps"`` or ``"auto"`` (fill ``token_budget``), see `sample_indices`.
        backend: ``"pyav"``, ``"decord"``, ``"torchcodec"``, or None for pyav then decord.
        max_frames: frame cap; for ``fps`` and ``auto`` it defaults to 1024 (the paper's inference maximum).
        token_budget: visual tokens available to the video (``auto``).
        min_pixels, max_pixels, shortest_edge, longest_edge: resize rules, see `target_size`.
        resize: False returns frames at native size (the target size still decides the ``auto`` frame count).
        threads: decoder threads; 0 lets the library choose. Use 1 inside data-loader workers that already run
            in parallel.
        start, end: sample only from this window, in seconds (MVBench's bounded tasks); see `clip_frames`.
        folder_fps: frame rate of a frame folder (required when ``path`` is one; ignored for files).
        sampler: ``(num_total_frames, fps) -> indices``, replacing ``sample`` and the window (a benchmark's rule).
        pre_resize: (longest, shortest) edges of the release's pre-resize (`edge_resize_size`), done first.

    Returns:
        `VideoFrames` with frames (T, H, W, 3) uint8, T even (except with a ``sampler``, which decides T).

    Raises:
        VideoReadError: the file cannot be read (missing, empty, not a video, no decodable frame).
        ValueError: invalid arguments (unknown sample mode or backend, missing num_frames/fps/token_budget).
    """
    path = os.fspath(path)
    if sample not in SAMPLE_MODES:
        raise ValueError(f"sample must be one of {SAMPLE_MODES}, got {sample!r}")
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    installed = available_backends()
    if backend is not None and backend not in installed:
        raise ImportError(f"video backend {backend!r} is not installed or fails to import (installed: {installed})")
    plan = dict(sample=sample, num_frames=num_frames, fps=fps, max_frames=max_frames, token_budget=token_budget,
                size_kwargs=dict(min_pixels=min_pixels, max_pixels=max_pixels, shortest_edge=shortest_edge,
                                 longest_edge=longest_edge),
                clip=(start, end), sampler=sampler, pre_resize=pre_resize)
    if os.path.isdir(path):
        if not folder_fps or folder_fps <= 0:
            raise VideoReadError(f"{path}: a folder, not a video file (a frame folder needs folder_fps)")
        return _load_frame_folder(path, float(folder_fps), plan, resize)
    _check_file(path)
    names = [backend] if backend is not None else [b for b in DEFAULT_BACKEND_ORDER if b in installed]
    if not names:
        raise VideoReadError(f"{path}: no video backend installed (pip install av, or decord)")
    errors = []
    for name in names:  # each backend once: no retry loops
        try:
            reader = _READERS[name](path, threads)
        except Exception as e:  # libraries raise their own types (av.error.*, DECORDError, RuntimeError)
            errors.append(f"{name}: {_reason(e, path)}")
            continue
        try:
            meta = reader.meta
            # Outside the error capture: a bad argument (e.g. a budget too small for the resolution) is the
            # caller's mistake, not the file's, and must not be retried on another backend.
            indices, out_hw, mid_hw = _plan(meta, **plan)
            unique, inverse = np.unique(indices, return_inverse=True)
            native = (meta.height, meta.width)
            sink = _FrameSink(len(unique), native, out_hw if resize else native, mid_hw if resize else None)
            try:
                got, times = reader.read(unique, sink)
            except Exception as e:
                errors.append(f"{name}: {_reason(e, path)}")
                continue
            frames = sink.finish()
            if len(unique) != len(indices):  # repeated indices (even padding of short videos, or a sampler's)
                frames, got, times = frames[inverse], got[inverse], times[inverse]
            return VideoFrames(frames=frames, timestamps=np.asarray(times, dtype=np.float64),
                               indices=np.asarray(got, dtype=np.int64), fps=float(meta.fps),
                               num_total_frames=int(meta.num_frames), duration=float(meta.duration),
                               backend=name, stats=dict(reader.stats))
        finally:
            reader.close()
    raise VideoReadError(f"cannot read video {path}: " + "; ".join(errors))


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _natural_key(name: str) -> list:
    """'frame_10.jpg' after 'frame_9.jpg' (zero-padded names sort the same either way)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _load_frame_folder(path: str, folder_fps: float, plan: dict[str, Any], resize: bool) -> VideoFrames:
    """`load_video` for a folder of frame images: frame i is the i-th image in natural name order."""
    from PIL import Image, UnidentifiedImageError

    files = sorted((f for f in os.listdir(path) if f.lower().endswith(IMAGE_SUFFIXES)), key=_natural_key)
    if not files:
        raise VideoReadError(f"{path}: frame folder without image files ({', '.join(IMAGE_SUFFIXES)})")

    def read(name: str) -> np.ndarray:
        try:
            with Image.open(os.path.join(path, name)) as im:
                return np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise VideoReadError(f"{os.path.join(path, name)}: unreadable frame image ({e})") from None

    first = read(files[0])
    meta = _Meta(len(files), folder_fps, len(files) / folder_fps, first.shape[0], first.shape[1])
    indices, out_hw, mid_hw = _plan(meta, **plan)
    unique, inverse = np.unique(indices, return_inverse=True)
    sink = _FrameSink(len(unique), first.shape[:2], out_hw if resize else first.shape[:2], mid_hw if resize else None)
    for slot, index in enumerate(unique):
        sink.put(slot, first if index == 0 else read(files[index]))
    frames = sink.finish()[inverse]
    return VideoFrames(frames=frames, timestamps=indices / folder_fps, indices=indices.astype(np.int64),
                       fps=folder_fps, num_total_frames=len(files), duration=len(files) / folder_fps,
                       backend="frames", stats={"images_read": len(unique)})


def _reason(e: BaseException, path: str) -> str:
    """One line per backend: the exception's first line, without the path (the message names it once) or decord's
    C++ source location."""
    text = str(e).strip()
    msg = text.splitlines()[0] if text else type(e).__name__
    for p in (f": '{path}'", f"'{path}'", path):
        msg = msg.replace(p, "")
    return f"{type(e).__name__}: {msg.strip()}"[:300]
