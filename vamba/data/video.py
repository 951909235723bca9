"""The one video reader of the project: a file (or frame folder) and a `FrameSpec` -> sampled, resized RGB frames.

Training data, every benchmark, chat and the lmms-eval adapter read video through `load_video`, so frame choice
(`vamba.data.frames`), resizing and error handling are identical everywhere (the original release pasted a decord
loader into seven eval scripts)::

    open (backend) -> metadata -> `frames.plan` (indices, sizes) -> decode only those frames -> resize in chunks

Decoding (`vamba.data.decode`): PyAV with our seek planner, decord as the fallback. ``backend=None`` tries pyav,
then decord, each once, and raises `VideoReadError` (a ``ValueError``) naming the file and every backend's reason.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .decode import BACKENDS, READERS, FrameSink, Meta, VideoReadError, available_backends, resize_frames
from .frames import FrameSpec, plan, sample_indices

# Re-exported: VideoReadError, available_backends, resize_frames (vamba.data.decode), sample_indices (.frames).
__all__ = ["VideoFrames", "VideoReadError", "available_backends", "load_video", "read_image", "resize_frames",
           "sample_indices"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


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
        backend: the backend that decoded the frames ("frames" for a frame folder).
        stats: decoder counters (pyav: ``packets_decoded``, ``frames_decoded``, ``frames_converted``, ``seeks``,
            ``decode_errors``, ``missing_frames``, ``mode``), for tests, benchmarks and logs.
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
# The entry point
# --------------------------------------------------------------------------------------------------------------


def load_video(path: str | os.PathLike, spec: FrameSpec | None = None, *, backend: str | None = None,
               resize: bool = True, threads: int = 0, folder_fps: float | None = None) -> VideoFrames:
    """Read a video file and return the frames ``spec`` asks for (see the module docstring for the contract).

    Args:
        path: video file, or a folder of frame images (MVBench's Episodic Reasoning: ``00001.jpg``, ...), frame i
            being the i-th image in natural name order, read with Pillow at ``folder_fps`` frames per second.
        spec: which frames and at what size (`vamba.data.frames.FrameSpec`); None: 16 uniform frames within
            Qwen2-VL's video pixel bounds.
        backend: ``"pyav"``, ``"decord"``, or None for pyav then decord.
        resize: False returns frames at native size (the output size still decides an ``auto`` frame count).
        threads: decoder threads; 0 lets the library choose. Use 1 inside data-loader workers that already run
            in parallel.
        folder_fps: frame rate of a frame folder (required when ``path`` is one; ignored for files).

    Returns:
        `VideoFrames` with frames (T, H, W, 3) uint8, T even (except with a ``spec.sampler``, which decides T).

    Raises:
        VideoReadError: the file cannot be read (missing, empty, not a video, no decodable frame).
        ValueError: invalid arguments (an unknown backend, a token budget that fits no frame, a bad window).
    """
    path, spec = os.fspath(path), spec or FrameSpec()
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    installed = available_backends()
    if backend is not None and backend not in installed:
        raise ImportError(f"video backend {backend!r} is not installed or fails to import (installed: {installed})")
    if os.path.isdir(path):
        return _load_frame_folder(path, spec, folder_fps, resize)
    _check_file(path)
    names = [backend] if backend is not None else installed
    if not names:
        raise VideoReadError(f"{path}: no video backend installed (pip install av, or decord)")
    errors = []
    for name in names:  # each backend once: no retry loops
        try:
            reader = READERS[name](path, threads)
        except Exception as e:  # libraries raise their own types (av.error.*, DECORDError, RuntimeError)
            errors.append(f"{name}: {_reason(e, path)}")
            continue
        try:
            # Outside the error capture: a bad argument (e.g. a budget too small for the resolution) is the
            # caller's mistake, not the file's, and must not be retried on another backend.
            unique, inverse, sink = _prepare(reader.meta, spec, resize)
            try:
                got, times = reader.read(unique, sink)
            except Exception as e:
                errors.append(f"{name}: {_reason(e, path)}")
                continue
            return _result(reader.meta, sink, inverse, got, times, name, reader.stats)
        finally:
            reader.close()
    raise VideoReadError(f"cannot read video {path}: " + "; ".join(errors))


def _prepare(meta: Meta, spec: FrameSpec, resize: bool) -> tuple[np.ndarray, np.ndarray, FrameSink]:
    """Sorted unique frame indices, the map back to the planned order, and the sink the frames go to."""
    indices, out_hw, mid_hw = plan(spec, meta.num_frames, meta.fps, meta.height, meta.width)
    unique, inverse = np.unique(indices, return_inverse=True)
    native = (meta.height, meta.width)
    return unique, inverse, FrameSink(len(unique), native, out_hw if resize else native, mid_hw if resize else None)


def _result(meta: Meta, sink: FrameSink, inverse: np.ndarray, got: np.ndarray, times: np.ndarray, backend: str,
            stats: dict[str, Any]) -> VideoFrames:
    frames = sink.finish()
    if len(inverse) != len(frames):  # repeated indices (even padding of short videos, or a sampler's)
        frames, got, times = frames[inverse], got[inverse], times[inverse]
    return VideoFrames(frames=frames, timestamps=np.asarray(times, dtype=np.float64),
                       indices=np.asarray(got, dtype=np.int64), fps=float(meta.fps),
                       num_total_frames=int(meta.num_frames), duration=float(meta.duration), backend=backend,
                       stats=dict(stats))


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoReadError(f"{path}: file not found")
    if not os.path.isfile(path):  # FIFOs, devices: a decoder could block forever on a pipe
        raise VideoReadError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"{path}: empty file (0 bytes)")


def _natural_key(name: str) -> list:
    """'frame_10.jpg' after 'frame_9.jpg' (zero-padded names sort the same either way)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_image(source: str | os.PathLike | bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file or its bytes (Pillow); `VideoReadError` naming it when unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        embedded = isinstance(source, (bytes, bytearray, memoryview))
        with Image.open(io.BytesIO(source) if embedded else source) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        name = "embedded image" if embedded else source
        raise VideoReadError(f"{name}: unreadable image ({e})") from None


def _load_frame_folder(path: str, spec: FrameSpec, folder_fps: float | None, resize: bool) -> VideoFrames:
    """`load_video` for a folder of frame images: frame i is the i-th image in natural name order."""
    if not folder_fps or folder_fps <= 0:
        raise VideoReadError(f"{path}: a folder, not a video file (a frame folder needs folder_fps)")
    files = sorted((f for f in os.listdir(path) if f.lower().endswith(IMAGE_SUFFIXES)), key=_natural_key)
    if not files:
        raise VideoReadError(f"{path}: frame folder without image files ({', '.join(IMAGE_SUFFIXES)})")

    def read(name: str) -> np.ndarray:
        return read_image(os.path.join(path, name))

    first = read(files[0])
    meta = Meta(len(files), float(folder_fps), len(files) / folder_fps, first.shape[0], first.shape[1])
    unique, inverse, sink = _prepare(meta, spec, resize)
    for slot, index in enumerate(unique):
        sink.put(slot, first if index == 0 else read(files[index]))
    return _result(meta, sink, inverse, unique, unique / meta.fps, "frames", {"images_read": len(unique)})


def _reason(e: BaseException, path: str) -> str:
    """One line per backend: the exception's first line, without the path (the message names it once) or decord's
    C++ source location."""
    text = str(e).strip()
    msg = text.splitlines()[0] if text else type(e).__name__
    for p in (f": '{path}'", f"'{path}'", path):
        msg = msg.replace(p, "")
    return f"{type(e).__name__}: {msg.strip()}"[:300]
