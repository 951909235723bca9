"""Writing mp4 files with PyAV: the project's one encoder, and a clip whose every frame shows its own index.

`write_mp4` encodes RGB frames reproducibly (single-threaded, x264 `cpu-independent`, fixed keyframe interval) and
atomically (a temporary file renamed into place); the synthetic dataset (`vamba.data.synthetic`) and the frame-id
clip below both use it. The frame-id clip (`write_synthetic_video`, read back with `read_frame_ids`) lets decoder
tests and benchmarks check which frames a reader returned.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch


def resolve_codec(codec: str | None) -> str:
    """``auto`` (or None) -> libx264 when the installed PyAV/FFmpeg has it, else mpeg4 (always built in)."""
    if codec not in (None, "auto"):
        return codec
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, *, codec: str | None = "auto",
              gop: int = 16, crf: int = 18, preset: str = "medium", b_frames: int | None = None,
              bit_rate: int | None = None) -> str:
    """Encode (H, W, 3) uint8 RGB frames as yuv420p mp4 (sides even); returns the codec used.

    libx264: constant quality ``crf``, a keyframe exactly every ``gop`` frames (no scene-cut keyframes), one thread
    and `cpu-independent` (without it x264's optimised paths gave different bitstreams for identical input in
    repeated runs on this machine's CPU). mpeg4: ``bit_rate`` (default ~0.5 byte per pixel: near-lossless).
    ``b_frames`` None keeps the codec's default.
    """
    import av

    codec = resolve_codec(codec)
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            if codec == "libx264":
                params = f"keyint={gop}:min-keyint={gop}:scenecut=0:threads=1:cpu-independent=1"
                params += "" if b_frames is None else f":bframes={b_frames}"
                stream = container.add_stream(codec, rate=rate, options={"crf": str(crf), "preset": preset,
                                                                         "x264-params": params})
            else:
                stream = container.add_stream(codec, rate=rate)
                stream.bit_rate = bit_rate or int(width * height * float(rate) * 4)
                stream.codec_context.gop_size = gop
                if b_frames is not None:
                    stream.codec_context.max_b_frames = b_frames
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.thread_count = 1
            for i, rgb in enumerate(itertools.chain([first], frames)):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts, frame.time_base = i, 1 / rate
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return codec


_ID_BITS, _ID_COLS = 16, 8  # frame index in 16 black/white blocks: two rows of eight along the top


def _id_block(height: int, width: int) -> int:
    return max(4, min(width // _ID_COLS, height // 6))


def _id_frame(i: int, texture: np.ndarray) -> np.ndarray:
    h, w = texture.shape[:2]
    # The texture scrolls (real motion, so the encoder makes P/B frames with actual residuals)...
    img = np.roll(texture, ((2 * i) % h, (3 * i) % w), axis=(0, 1))
    # ...and the frame index is written as large binary blocks that survive lossy compression and resizing.
    b = _id_block(h, w)
    for bit in range(_ID_BITS):
        r, c = divmod(bit, _ID_COLS)
        img[r * b:(r + 1) * b, c * b:(c + 1) * b] = 235 if (i >> bit) & 1 else 16
    return img


def write_synthetic_video(path: str | os.PathLike, num_frames: int, width: int = 64, height: int = 48, fps: int = 30,
                          gop: int = 250, codec: str | None = None,
                          progress: Callable[[int], None] | None = None) -> str:
    """Encode an mp4 whose frame i shows i in binary blocks (read back with `read_frame_ids`); returns the codec.

    Frames: a scrolling colour texture plus the id blocks. ``codec`` None picks libx264 (keyframe exactly every
    ``gop`` frames, B-frames on) when available, else mpeg4. Sizes must be even (yuv420p).
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = np.stack([128 + 100 * np.sin(xx / 17.0 + yy / 29.0), 128 + 100 * np.sin(yy / 13.0 - xx / 41.0),
                        128 + 100 * np.cos((xx + yy) / 23.0)], axis=-1).astype(np.uint8)

    def frames():
        for i in range(num_frames):
            yield _id_frame(i, texture)
            if progress is not None:
                progress(i)

    return write_mp4(path, frames(), fps, codec=codec, gop=gop, crf=23, preset="veryfast", b_frames=2,
                     bit_rate=max(200_000, width * height * fps // 4))


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
