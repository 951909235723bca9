"""The one video reader of the project: a file (or frame folder) and a `FrameSpec` -> sampled, resized RGB frames.

Training data, every benchmark, chat and the lmms-eval adapter read video through `load_video`, so frame choice
(`vamba.data.frames`), resizing and error handling are identical everywhere (the original release pasted a decord
loader into seven eval scripts)::

    open (backend) -> metadata -> `frames.plan` (indices, sizes) -> decode only those frames -> resize in chunks

Decoding (`vamba.data.decode`): PyAV with our seek planner, decord as the fallback. ``backend=None`` tries pyav,
then decord, each once, and raises `VideoReadError` (a ``ValueError``) naming the file and every backend's reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .decode import BACKENDS, READERS, FrameSink, Meta, VideoReadError, available_backends, resize_frames
from .frames import FrameSpec, plan, sample_indices

# Re-exported: VideoReadError, available_backends, resize_frames (vamba.data.decode), sample_indices (.frames).
__all__ = ["VideoFrames", "VideoReadError", "available_backends", "load_video", "read_frame_ids", "resize_frames",
           "sample_indices", "write_synthetic_video"]

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


def _load_frame_folder(path: str, spec: FrameSpec, folder_fps: float | None, resize: bool) -> VideoFrames:
    """`load_video` for a folder of frame images: frame i is the i-th image in natural name order."""
    from PIL import Image, UnidentifiedImageError

    if not folder_fps or folder_fps <= 0:
        raise VideoReadError(f"{path}: a folder, not a video file (a frame folder needs folder_fps)")
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


def _import_av():
    import av

    return av


# --------------------------------------------------------------------------------------------------------------
# Synthetic clips: tests, benchmarks and offline demos need real encoded files whose frames can be identified.
# --------------------------------------------------------------------------------------------------------------

_ID_BITS, _ID_COLS = 16, 8  # frame index in 16 black/white blocks: two rows of eight along the top


def _id_block(height: int, width: int) -> int:
    return max(4, min(width // _ID_COLS, height // 6))


def _synthetic_frame(i: int, texture: np.ndarray) -> np.ndarray:
    h, w = texture.shape[:2]
    # The texture scrolls (real motion, so the encoder makes P/B frames with actual residuals)...
    img = np.roll(texture, ((2 * i) % h, (3 * i) % w), axis=(0, 1))
    # ...and the frame index is written as large binary blocks that survive lossy compression and resizing.
    b = _id_block(h, w)
    for bit in range(_ID_BITS):
        r, c = divmod(bit, _ID_COLS)
        img[r * b:(r + 1) * b, c * b:(c + 1) * b] = 235 if (i >> bit) & 1 else 16
    return img


def write_synthetic_video(
    path: str | os.PathLike,
    num_frames: int,
    width: int = 64,
    height: int = 48,
    fps: int = 30,
    gop: int = 250,
    codec: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> str:
    """Encode an mp4 whose frame i shows i in binary blocks (read back with `read_frame_ids`); returns the codec.

    Frames: a scrolling colour texture plus the id blocks. ``codec`` None picks libx264 (keyframe exactly every
    ``gop`` frames, B-frames on) when available, else mpeg4. Sizes must be even (yuv420p).
    """
    av = _import_av()
    if codec is None:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = np.stack([128 + 100 * np.sin(xx / 17.0 + yy / 29.0), 128 + 100 * np.sin(yy / 13.0 - xx / 41.0),
                        128 + 100 * np.cos((xx + yy) / 23.0)], axis=-1).astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            # Fixed GOP (no scene-cut keyframes) so keyframe spacing is known; veryfast keeps generation quick.
            stream.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0", "preset": "veryfast"}
        else:
            stream.codec_context.gop_size = gop
            stream.codec_context.max_b_frames = 2
            stream.codec_context.bit_rate = max(200_000, width * height * fps // 4)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(_synthetic_frame(i, texture), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            if progress is not None:
                progress(i)
        for packet in stream.encode():
            container.mux(packet)
    return codec


def read_frame_ids(frames: np.ndarray | torch.Tensor, encoded_size: tuple[int, int] | None = None) -> np.ndarray:
    """Frame indices written by `write_synthetic_video`, read back from (T, h, w, 3) uint8 frames.

    ``encoded_size`` is the (height, width) the clip was written at, needed when the frames were resized since;
    None means they were not.
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.cpu().numpy()
    t, h, w, _ = frames.shape
    eh, ew = encoded_size or (h, w)
    b = _id_block(eh, ew)
    sy, sx = b * h / eh, b * w / ew  # block size in the given frames' pixels
    gray = frames.astype(np.float32).mean(-1)
    ids = np.zeros(t, dtype=np.int64)
    for bit in range(_ID_BITS):
        r, c = divmod(bit, _ID_COLS)
        # Average the middle half of each block: its edges are blurred by compression and resizing.
        y0, y1 = int((r + 0.25) * sy), max(int((r + 0.75) * sy), int((r + 0.25) * sy) + 1)
        x0, x1 = int((c + 0.25) * sx), max(int((c + 0.75) * sx), int((c + 0.25) * sx) + 1)
        ids |= (gray[:, y0:y1, x0:x1].mean(axis=(1, 2)) > 128).astype(np.int64) << bit
    return ids
