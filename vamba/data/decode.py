"""Decoders: the wanted frames of a video file, resized as they arrive (used by `vamba.data.video.load_video`).

Each reader opens the file in ``__init__`` (raising on failure), exposes its metadata (`Meta`), and
``read(indices, sink)`` decodes the sorted unique ``indices`` into `FrameSink` slots 0..U-1, returning the actual
index and the timestamp (seconds from the first frame) of each slot. Frame i is the i-th frame in presentation
order on both backends, so the same indices give the same frames. Measured in docs/decoding.md
(`scripts/bench_decode.py`, a 10-minute 640x360 h264 file, one thread):

- ``pyav`` (the default): our seek planner on PyAV. One demux pass indexes the packets (no decoding); then for each
  wanted frame it seeks to the preceding keyframe only when that skips more than a few frames, so sparse sampling
  decodes keyframe-to-sample spans and dense sampling is one pass. Unwanted non-reference frames are not decoded
  (``skip_frame="NONREF"``) and unwanted frames are never converted to RGB (the conversion costs about 1.5x the
  decoding of a frame). It needs 1.5-3x less CPU time than decord and transformers' reader at 64-1,024 frames,
  1.2-1.4x less than torchcodec at 64 and 256 frames and as much at 1,024 (torchcodec needs system FFmpeg and a
  build for the installed torch, which PyPI lacks for torch 2.13 CPU).
- ``decord`` (the fallback): ``VideoReader.get_batch``, in chunks so memory stays bounded.

If a wanted frame cannot be decoded (a corrupt packet), pyav returns the next decodable frame in its place and slots
past the last decodable frame repeat it (``stats["missing_frames"]``); a file truncated after its index (an mp4
written with faststart) is read up to the cut. Frames are resized in batches of about 16 MB into one preallocated
output array, so the peak memory is the sampled frames at the output size plus one batch, however long the file.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

BACKENDS = ("pyav", "decord")  # the order backend=None tries them
_IMPORTS = {"pyav": "av", "decord": "decord"}
_CHUNK_ELEMENTS = 1 << 24  # frames x H x W x 3 resized at once (16 MB of uint8): bounds staging and temporaries


class VideoReadError(ValueError):
    """A video file that cannot be read. The message names the file and the reason (one per backend tried)."""


def _resize(frames: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(N, h, w, 3) uint8 -> (N, H, W, 3) uint8, bicubic with antialias (a low-pass filter when shrinking, as PIL
    does in Qwen2-VL's reference processor). Runs torch's uint8 kernel on the channels-last view of the frames, the
    path of torchvision's ``Resize`` and transformers' fast processors: no float copy, rounding and clamping to
    [0, 255] in the kernel, ~20x the float path on CPU (0.6 vs 13 ms per 640x360 frame)."""
    if frames.shape[1:3] == tuple(hw):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return F.interpolate(x, size=tuple(hw), mode="bicubic", align_corners=False, antialias=True).permute(0, 2, 3, 1)\
        .numpy()


def resize_frames(frames: np.ndarray | torch.Tensor, height: int, width: int) -> np.ndarray:
    """Resize (T, H, W, 3) uint8 frames to (T, height, width, 3) uint8 (bicubic, antialias; see `_resize`), in
    chunks of frames so temporaries stay small whatever T is."""
    if isinstance(frames, torch.Tensor):
        frames = frames.cpu().numpy()
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {tuple(frames.shape)}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    out = np.empty((len(frames), height, width, 3), dtype=np.uint8)
    step = max(1, _CHUNK_ELEMENTS // (max(frames.shape[1] * frames.shape[2], height * width) * 3))
    for s in range(0, len(frames), step):
        out[s:s + step] = _resize(frames[s:s + step], (height, width))
    return out


class FrameSink:
    """Receives decoded RGB frames by slot and writes them, resized (through the pre-resize size when there is one),
    into one preallocated (U, H', W', 3) array. Frames wait in batches of about 16 MB so resizing runs batched; the
    video is never held at native size."""

    def __init__(self, count: int, src_hw: tuple[int, int], dst_hw: tuple[int, int],
                 mid_hw: tuple[int, int] | None = None):
        self.out = np.empty((count, *dst_hw, 3), dtype=np.uint8)
        self.src_hw = tuple(src_hw)
        self.sizes = ([mid_hw] if mid_hw not in (None, self.src_hw, tuple(dst_hw)) else []) + [tuple(dst_hw)]
        self.batch = max(1, min(count, _CHUNK_ELEMENTS // (max(src_hw[0] * src_hw[1], dst_hw[0] * dst_hw[1]) * 3)))
        self.staging = np.empty((self.batch, *src_hw, 3), dtype=np.uint8)  # pages are touched only when used
        self.pending: list[int] = []  # the slots of the frames in staging
        self.copies: list[tuple[int, int]] = []  # (dst slot, src slot), applied at finish

    def _resized(self, frames: np.ndarray) -> np.ndarray:
        for hw in self.sizes:
            frames = _resize(frames, hw)
        return frames

    def put(self, slot: int, rgb: np.ndarray) -> None:
        if rgb.shape[:2] != self.src_hw or self.sizes == [self.src_hw]:  # no resize, or the stream changed
            self.out[slot] = self._resized(rgb[None])[0]  # resolution mid-file: this frame on its own
            return
        self.staging[len(self.pending)] = rgb
        self.pending.append(slot)
        if len(self.pending) == self.batch:
            self._flush()

    def copy(self, dst_slot: int, src_slot: int) -> None:
        """Fill ``dst_slot`` with the frame put in ``src_slot`` (a frame that could not be decoded)."""
        self.copies.append((dst_slot, src_slot))

    def reset(self) -> None:
        """Forget pending work before slots are written again from the start."""
        self.pending, self.copies = [], []

    def _flush(self) -> None:
        if self.pending:
            self.out[self.pending] = self._resized(self.staging[:len(self.pending)])
            self.pending = []

    def finish(self) -> np.ndarray:
        self._flush()
        for dst, src in self.copies:
            self.out[dst] = self.out[src]
        return self.out


@dataclass
class Meta:
    """What a reader knows of a video before decoding."""

    num_frames: int
    fps: float
    duration: float
    height: int
    width: int


class _NoTimestamps(Exception):
    """Decoded frames carry no pts, so they cannot be matched to the packet index."""


class _PyAVReader:
    """PyAV with a seek planner (module docstring). One demux pass gives every frame's presentation timestamp and the
    keyframes without decoding (milliseconds for a 10-minute file; decord does the same scan when it opens a file).
    If timestamps are missing or repeated (some raw or broken streams), frames are counted in decode order instead,
    in one sequential pass with no seeking."""

    name = "pyav"

    def __init__(self, path: str, threads: int = 0):
        import av

        self.av, self.path, self.threads, self.container = av, path, int(threads), None
        self.stats = {"packets_decoded": 0, "frames_decoded": 0, "frames_converted": 0, "seeks": 0,
                      "decode_errors": 0, "missing_frames": 0, "mode": "indexed"}
        self._scan()

    def _open(self):
        container = self.av.open(self.path, mode="r")
        if not container.streams.video:
            container.close()
            raise VideoReadError(f"{self.path}: no video stream")
        stream = container.streams.video[0]
        # 0 lets FFmpeg pick a thread count. Frame threading ("AUTO") is what makes several threads pay off for
        # h264; with one thread the type does not matter.
        stream.codec_context.thread_count = self.threads
        stream.codec_context.thread_type = "AUTO" if self.threads != 1 else "SLICE"
        return container, stream

    def _scan(self) -> None:
        container, stream = self._open()
        try:
            pts, keys, exact = [], [], True
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:  # flush packets; edit-list leftovers the decoder drops
                    continue
                p = packet.pts if packet.pts is not None else packet.dts
                if p is None:
                    exact, p = False, len(pts)
                pts.append(p)
                keys.append(bool(packet.is_keyframe))
            self.time_base = float(stream.time_base or Fraction(1, 1))
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
        self.exact = exact and bool(np.all(np.diff(self.pts) > 0))  # a repeated timestamp cannot name one frame
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        # Presentation index of each keyframe; the first frame counts as one (seeking to it = the file's start).
        self.key_idx = np.union1d([0], rank[np.asarray(keys, dtype=bool)]).astype(np.int64)
        self.pos_of = {int(p): i for i, p in enumerate(self.pts.tolist())} if self.exact else {}
        n = len(self.pts)
        span = float(self.pts[-1] - self.pts[0]) * self.time_base if self.exact else 0.0
        fps = float(rate) if rate else ((n - 1) / span if span > 0 else 0.0)
        fps = fps if fps > 0 else 25.0  # no rate anywhere: timestamps become index / 25, FFmpeg's own guess
        self.meta = Meta(n, fps, span + 1.0 / fps if self.exact else n / fps, int(height), int(width))

    def read(self, indices: np.ndarray, sink: FrameSink) -> tuple[np.ndarray, np.ndarray]:
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
            self.close()
        if self.exact:
            return got, (self.pts[got] - self.pts[0]).astype(np.float64) * self.time_base
        return got, got.astype(np.float64) / self.meta.fps

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None

    def _seek_margin(self) -> int:
        # Decoding a frame costs ~0.1-1 ms; a seek costs a demuxer reposition plus refilling the decoder pipeline
        # (reorder delay + one frame per frame-thread). Below this many skipped frames, decoding on is cheaper.
        return 8 + 2 * (self.threads if self.threads > 0 else (os.cpu_count() or 1))

    def _decode(self, packet) -> list:
        self.stats["packets_decoded"] += packet.size > 0
        try:
            frames = packet.decode()
        except self.av.error.InvalidDataError:
            # A corrupt packet: FFmpeg conceals what it can in later frames; a missing frame is replaced by the next
            # one (`_take`), so one bad packet does not fail the whole video.
            self.stats["decode_errors"] += 1
            return []
        self.stats["frames_decoded"] += len(frames)
        return frames

    def _decoded(self, kpos: int, wanted: set[int] | None):
        """Decoded frames from the keyframe ``key_idx[kpos]`` on. kpos 0 reopens the file: the one repositioning
        that cannot land late. With ``wanted`` (pts), packets of other frames are decoded only if referenced."""
        if kpos == 0 or self.container is None:
            self.close()
            self.container, self.stream = self._open()
        if kpos > 0:  # backward=True lands on the last keyframe at or before the timestamp; flushes the decoder
            self.container.seek(int(self.pts[self.key_idx[kpos]]), backward=True, any_frame=False, stream=self.stream)
            self.stats["seeks"] += 1
        cc, mode = self.stream.codec_context, None
        for packet in self.container.demux(self.stream):
            if wanted is not None and mode != (m := "DEFAULT" if packet.pts in wanted else "NONREF"):
                cc.skip_frame = mode = m
            yield from self._decode(packet)

    def _take(self, frame, pos: int, idx: int, targets: np.ndarray, slot: int, got: np.ndarray,
              sink: FrameSink) -> int:
        """Put ``frame`` (position ``pos``, index ``idx``) in every slot from ``slot`` on whose target position is
        <= pos (a smaller target could not be decoded: the next frame stands in); returns the next slot."""
        first = slot
        while slot < len(targets) and targets[slot] <= pos:
            self.stats["missing_frames"] += int(targets[slot] != pos)
            if slot == first:
                self.stats["frames_converted"] += 1
                sink.put(slot, frame.to_ndarray(format="rgb24"))
            else:
                sink.copy(slot, first)
            got[slot] = idx
            slot += 1
        return slot

    def _read_indexed(self, want: np.ndarray, sink: FrameSink) -> np.ndarray:
        keys, targets, margin = self.key_idx, self.pts[want], self._seek_margin()
        wanted, got = set(targets.tolist()), np.empty(len(want), dtype=np.int64)
        slot, cur, backoff, frames = 0, -1, 0, None  # cur: presentation index of the last frame decoded

        def key_of(i: int) -> int:  # position in key_idx of the keyframe at or before frame i (key_idx[0] == 0)
            return int(np.searchsorted(keys, i, side="right")) - 1

        while slot < len(want):
            kpos = max(0, key_of(want[slot]) - backoff)
            if frames is None and keys[kpos] <= margin:
                kpos = 0  # near the start: decode from there
            frames, cur, check = self._decoded(kpos, wanted), int(keys[kpos]) - 1, kpos > 0
            for frame in frames:
                if frame.pts is None:
                    raise _NoTimestamps
                if check and frame.pts > targets[slot]:  # the demuxer landed after the wanted frame (an odd index
                    backoff += 1  # or an open GOP): step back one keyframe
                    break
                check = False
                idx = self.pos_of.get(frame.pts)
                idx = max(0, int(np.searchsorted(self.pts, frame.pts, side="right")) - 1) if idx is None else idx
                if frame.pts >= targets[slot]:
                    slot, backoff = self._take(frame, frame.pts, idx, targets, slot, got, sink), 0
                cur = max(cur, idx)
                # Done, or the next wanted frame's keyframe is more than `margin` frames ahead: seek there. (With
                # backoff > 0 we are decoding from an earlier keyframe on purpose and must not jump ahead again.)
                if slot == len(want) or (backoff == 0 and keys[key_of(want[slot])] - cur > margin):
                    break
            else:
                break  # end of file
        return self._tail(slot, got, sink)

    def _read_sequential(self, want: np.ndarray, sink: FrameSink) -> np.ndarray:
        """Without usable timestamps: frame i is the i-th frame the decoder returns; one pass, no seek."""
        self.stats["mode"] = "sequential"
        got, slot = np.empty(len(want), dtype=np.int64), 0
        for i, frame in enumerate(self._decoded(0, None)):
            slot = self._take(frame, i, i, want, slot, got, sink)
            if slot == len(want):
                break
        return self._tail(slot, got, sink)

    def _tail(self, slot: int, got: np.ndarray, sink: FrameSink) -> np.ndarray:
        """Slots past the last decodable frame (a damaged tail) repeat it."""
        if slot == 0:
            raise VideoReadError(f"{self.path}: no frame could be decoded")
        self.stats["missing_frames"] += len(got) - slot
        for s in range(slot, len(got)):
            sink.copy(s, slot - 1)
            got[s] = got[slot - 1]
        return got


class _DecordReader:
    """decord's VideoReader (the fallback); indices are read with get_batch in chunks so memory stays bounded."""

    name = "decord"

    def __init__(self, path: str, threads: int = 0):
        import decord

        self.path, self.stats = path, {}
        self.vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=int(threads))
        n = len(self.vr)
        if n <= 0:
            raise VideoReadError(f"{path}: no frames")
        h, w = self.vr[0].shape[:2]  # decord exposes no frame size: decode the first frame once
        self.vr.seek(0)
        fps = float(self.vr.get_avg_fps() or 0.0) or 25.0
        t = self.vr.get_frame_timestamp([0, n - 1])
        self.t0 = float(t[0, 0])
        self.meta = Meta(n, fps, float(t[1, 1] - t[0, 0]) if t[1, 1] > t[0, 0] else n / fps, int(h), int(w))

    def read(self, indices: np.ndarray, sink: FrameSink) -> tuple[np.ndarray, np.ndarray]:
        for s in range(0, len(indices), sink.batch):
            for slot, rgb in enumerate(self.vr.get_batch(indices[s:s + sink.batch].tolist()).asnumpy(), start=s):
                sink.put(slot, rgb)
        return indices.copy(), self.vr.get_frame_timestamp(indices.tolist())[:, 0].astype(np.float64) - self.t0

    def close(self) -> None:
        self.vr = None


READERS: dict[str, Callable[[str, int], Any]] = {"pyav": _PyAVReader, "decord": _DecordReader}


@functools.lru_cache(maxsize=1)
def _importable() -> tuple[str, ...]:
    out = []
    for name in BACKENDS:
        try:
            importlib.import_module(_IMPORTS[name])
        except Exception:  # ImportError, or a native library that fails to load
            continue
        out.append(name)
    return tuple(out)


def available_backends() -> list[str]:
    """Backends that import here, in the order backend=None tries them."""
    return list(_importable())
