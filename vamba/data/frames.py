"""Which frames of a video, and at what size: `FrameSpec` and the pure rules behind it (no decoding here).

A `FrameSpec` is the one frame setting of the project: a training source, `vamba eval`, `vamba chat` and the
lmms-eval adapter each hold one and pass it whole to `vamba.data.video.load_video`. In YAML and on the command
line it is a structured config node (`frames.count=256`, `frames.mode=auto frames.token_budget=16000`).

How many frames (`plan`):

- ``uniform`` (default): the middle frame of ``count`` equal segments, ``floor((i + 0.5) * total / count)``.
- ``linspace``: the original release's evaluation sampler (`linspace_indices`).
- ``fps``: ``fps`` frames per second of video, at most ``count``; also segment middles.
- ``auto``: as many frames as fit ``token_budget`` visual tokens at the output size (`frames_for_token_budget`), at
  most ``count``; the release's ``video_num_frames: auto``.
- a ``sampler(total, fps) -> indices`` (a benchmark's own rule, set in code) replaces the mode and the window.

Counts are rounded down to a multiple of the temporal patch (2), minimum 2: Qwen2-VL's vision tower groups frames
in pairs. A video with fewer frames than asked gives all of them, the last repeated once when their number is odd.
``start`` / ``end`` (seconds) restrict every mode to that window.

What size: the release's edge pre-resize first when ``longest_edge`` is set (`edge_resize_size`), then Qwen2-VL's
pixel rule (`target_size`: sides multiples of 28, area within [min_pixels, max_pixels]).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any

import numpy as np
import torch
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from ..modeling.errors import UsageError

# Qwen2-VL's video defaults (its video processor config): 128 to 768 merged 28x28 patches per frame.
DEFAULT_MIN_PIXELS = 128 * 28 * 28
DEFAULT_MAX_PIXELS = 768 * 28 * 28
DEFAULT_COUNT = 16  # frames for uniform / linspace when count is unset
DEFAULT_MAX_FRAMES = 1024  # the cap for fps / auto when count is unset: the most the paper feeds at inference
DEFAULT_SHORTEST_EDGE = 256  # the release's pre-resize floor per side
TEMPORAL_PATCH = 2


class Sampling(str, Enum):
    """`frames.mode`: how frames are picked (see the module docstring)."""

    uniform = "uniform"
    linspace = "linspace"
    fps = "fps"
    auto = "auto"

    def __str__(self) -> str:
        return self.value


@dataclass
class FrameSpec:
    """Which frames of a video are read and at what size. Every field is optional; None means the default (or,
    in `vamba eval`, the protocol's value; pixel bounds: the processor's).

    Attributes:
        mode: `Sampling` (default uniform).
        count: frames for uniform / linspace (default 16); the most frames for fps / auto (default 1024).
        fps: frames per second of video (mode fps).
        token_budget: visual tokens available to the video (mode auto).
        min_pixels, max_pixels: Qwen2-VL's area bounds per frame (default 100,352 and 602,112).
        longest_edge, shortest_edge: the release's pre-resize (`edge_resize_size`); 0 or None: none.
        start, end: sample only from this window, in seconds (MVBench's bounded tasks).
        sampler: ``(num_total_frames, fps) -> indices``, replacing mode and window (set in code, not in configs).
    """

    mode: Sampling | None = None
    count: int | None = None
    fps: float | None = None
    token_budget: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    longest_edge: int | None = None
    shortest_edge: int | None = None
    start: float | None = None
    end: float | None = None
    sampler: Callable[[int, float], Sequence[int]] | None = field(default=None, metadata={"omegaconf_ignore": True})

    def __post_init__(self) -> None:
        if self.mode is not None and not isinstance(self.mode, Sampling):
            try:
                self.mode = Sampling(str(self.mode))
            except ValueError:
                raise UsageError(f"frames.mode must be one of {', '.join(m.value for m in Sampling)}, "
                                 f"got {self.mode!r}") from None
        for name in ("count", "fps", "token_budget", "min_pixels", "max_pixels"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UsageError(f"frames.{name} must be positive, got {value}")
        if self.mode is Sampling.fps and self.fps is None:
            raise UsageError("frames.mode=fps needs frames.fps")
        if self.mode is Sampling.auto and self.token_budget is None:
            raise UsageError("frames.mode=auto needs frames.token_budget")

    def fill(self, **defaults: Any) -> FrameSpec:
        """A copy whose unset (None) fields take ``defaults`` (e.g. the processor's pixel bounds)."""
        return replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})

    def over(self, base: FrameSpec) -> FrameSpec:
        """This spec's set fields over ``base``'s (command-line values over a protocol's)."""
        return self.fill(**{f.name: getattr(base, f.name) for f in fields(base)})

    def fixed_count(self) -> int | None:
        """Frames sampled from a long enough video when that does not depend on the video (uniform, linspace)."""
        if self.sampler is not None or self.mode in (Sampling.fps, Sampling.auto):
            return None
        return self.count or DEFAULT_COUNT


def as_spec(value: FrameSpec | Mapping[str, Any] | None) -> FrameSpec:
    """A `FrameSpec` from itself, a config node (Hydra/OmegaConf) or a dict (validated: see `FrameSpec`)."""
    if isinstance(value, FrameSpec):
        return value
    return FrameSpec(**dict(value or {}))


# --------------------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------------------


def _segment_middles(total: int, n: int) -> np.ndarray:
    """Indices of the middle frame of n equal segments of [0, total); all frames (+ even pad) when total < n."""
    if total >= n:
        i = np.arange(n, dtype=np.int64)
        # floor((i + 0.5) * total / n) in exact integer arithmetic (no float rounding at large totals).
        return ((2 * i + 1) * total) // (2 * n)
    idx = np.arange(total, dtype=np.int64)
    if total % TEMPORAL_PATCH:  # Qwen2-VL consumes frames in pairs: repeat the last frame rather than drop one
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
    idx = idx[: len(idx) - len(idx) % TEMPORAL_PATCH]
    if not len(idx):
        raise ValueError(f"the release's sampler keeps no frame of a {total}-frame video (one frame, dropped as odd)")
    return idx.astype(np.int64)


def sample_indices(num_total_frames: int, native_fps: float, sample: str = "uniform", num_frames: int | None = None,
                   fps: float | None = None, max_frames: int | None = None) -> np.ndarray:
    """Which frames to decode: the project's one frame sampler (pure, no I/O).

    Args:
        num_total_frames: frames in the video (> 0).
        native_fps: the video's frame rate (used by ``fps``).
        sample: ``"uniform"`` (``num_frames`` segment middles), ``"linspace"`` (the release's sampler,
            `linspace_indices`) or ``"fps"`` (``fps`` frames per second of video, at most ``max_frames``).
        num_frames: requested count for uniform / linspace.
        fps: target frame rate for ``fps``.
        max_frames: cap on the count (all modes); None means no cap.

    Returns:
        (T,) int64 nondecreasing frame indices; T is even and >= 2 (see the module docstring).
    """
    total = int(num_total_frames)
    if total <= 0:
        raise ValueError(f"num_total_frames must be positive, got {num_total_frames}")
    if sample not in ("uniform", "linspace", "fps"):
        raise ValueError(f"sample must be uniform, linspace or fps, got {sample!r}")
    if sample == "fps":
        if fps is None or fps <= 0 or not native_fps or native_fps <= 0:
            raise ValueError(f"sample='fps' needs a positive fps and the video's fps, got {fps} and {native_fps}")
        n = math.floor(total / native_fps * fps + 1e-6)  # so 10 s * 2 fps computed as 19.999999 gives 20
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
    return _segment_middles(total, max(TEMPORAL_PATCH, n // TEMPORAL_PATCH * TEMPORAL_PATCH))


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


def frames_for_token_budget(token_budget: int, height: int, width: int, patch: int = 14, merge: int = 2,
                            temporal_patch: int = TEMPORAL_PATCH) -> int:
    """Most frames whose visual tokens fit ``token_budget`` at a frame size of (height, width).

    Qwen2-VL turns every ``temporal_patch`` frames into (H / (patch * merge)) * (W / (patch * merge)) tokens, so
    the answer is ``floor(budget / tokens_per_group) * temporal_patch`` (0 if not even one group fits). height and
    width are the sizes after resizing and must be multiples of ``patch * merge`` (28).
    """
    factor = patch * merge
    if height % factor or width % factor:
        raise ValueError(f"frame size {height}x{width} is not a multiple of {factor}; resize first (target_size)")
    return (int(token_budget) // ((height // factor) * (width // factor))) * temporal_patch


# --------------------------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------------------------


def edge_resize_size(height: int, width: int, longest_edge: int,
                     shortest_edge: int = DEFAULT_SHORTEST_EDGE) -> tuple[int, int]:
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


def target_size(height: int, width: int, min_pixels: int | None = None, max_pixels: int | None = None,
                factor: int = 28) -> tuple[int, int]:
    """Output (height, width) by Qwen2-VL's rule (transformers' ``smart_resize``, so it cannot drift from the
    model's processor): sides multiples of ``factor`` (28 = patch 14 x merge 2), area within [min_pixels,
    max_pixels], aspect kept. Defaults: Qwen2-VL's video bounds (640x360 -> 644x364 = 149.5 tokens per frame)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"invalid frame size {height}x{width}")
    lo = DEFAULT_MIN_PIXELS if min_pixels is None else min_pixels
    hi = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    h, w = smart_resize(height, width, factor=factor, min_pixels=lo, max_pixels=hi)
    return int(h), int(w)


# --------------------------------------------------------------------------------------------------------------
# The plan: a spec and a video's metadata -> frame indices and sizes
# --------------------------------------------------------------------------------------------------------------


def plan(spec: FrameSpec, total: int, native_fps: float, height: int, width: int
         ) -> tuple[np.ndarray, tuple[int, int], tuple[int, int] | None]:
    """Frame indices (T,) int64, output (height, width) and pre-resize (height, width) or None, for a video of
    ``total`` frames at ``native_fps`` and ``height`` x ``width``, from metadata alone (no decoding)."""
    mid = (edge_resize_size(height, width, spec.longest_edge, spec.shortest_edge or DEFAULT_SHORTEST_EDGE)
           if spec.longest_edge else None)
    out = target_size(*(mid or (height, width)), spec.min_pixels, spec.max_pixels)
    if spec.sampler is not None:
        idx = np.asarray(spec.sampler(total, native_fps), dtype=np.int64).reshape(-1)
        if not len(idx) or idx.min() < 0 or idx.max() >= total:
            raise ValueError(f"the frame sampler gave {len(idx)} indices outside 0..{total - 1}"
                             if len(idx) else "the frame sampler gave no frame")
        return idx, out, mid
    first, last = clip_frames(total, native_fps, spec.start, spec.end)
    n, mode = last - first + 1, spec.mode or Sampling.uniform
    if mode is Sampling.auto:
        fit = frames_for_token_budget(spec.token_budget, *out)
        if fit < TEMPORAL_PATCH:
            raise UsageError(f"frames.token_budget={spec.token_budget} does not fit even {TEMPORAL_PATCH} frames at "
                             f"{out[0]}x{out[1]}; raise the budget or lower max_pixels")
        idx = sample_indices(n, native_fps, "uniform", num_frames=fit, max_frames=spec.count or DEFAULT_MAX_FRAMES)
    elif mode is Sampling.fps:
        idx = sample_indices(n, native_fps, "fps", fps=spec.fps, max_frames=spec.count or DEFAULT_MAX_FRAMES)
    else:
        idx = sample_indices(n, native_fps, mode.value, num_frames=spec.count or DEFAULT_COUNT)
    return idx + first, out, mid
