"""Tests for `vamba.data.frames`, `vamba.data.decode` and `vamba.data.video`: frame specs, sampling, resizing,
backends, decoding cost and bad input.

Every clip is a real mp4 written here with PyAV (`write_synthetic_video`): frame i shows i in binary blocks, so a
test can read back which frame it got (`read_frame_ids`). Clips are tiny (64x48) so the whole file runs in seconds.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from vamba.data import decode as D  # noqa: E402
from vamba.data import frames as FR  # noqa: E402
from vamba.data.frames import (  # noqa: E402
    FrameSpec,
    Sampling,
    as_spec,
    frames_for_token_budget,
    plan,
    sample_indices,
    target_size,
)
from vamba.data.mp4 import read_frame_ids, write_synthetic_video  # noqa: E402
from vamba.data.video import VideoFrames, VideoReadError, load_video, resize_frames  # noqa: E402

HAS_DECORD = importlib.util.find_spec("decord") is not None
needs_decord = pytest.mark.skipif(not HAS_DECORD, reason="decord not installed")
FPS = 30
SMALL = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)  # 64x48 -> 56x56: 4 tokens per 2 frames


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    out = {
        "h264": (d / "h264_300.mp4", 300, 30),  # keyframe every 30 frames, B-frames on
        "long": (d / "h264_1500.mp4", 1500, 50),
        "short": (d / "h264_7.mp4", 7, 30),
        "mpeg4": (d / "mpeg4_120.mp4", 120, 30),
    }
    for name, (path, n, gop) in out.items():
        write_synthetic_video(path, n, fps=FPS, gop=gop, codec="mpeg4" if name == "mpeg4" else None)
    return {k: v[0] for k, v in out.items()}


def _check_ids(v: VideoFrames, encoded=(48, 64)) -> None:
    assert v.frames.dtype == np.uint8 and v.frames.ndim == 4 and v.frames.shape[-1] == 3
    np.testing.assert_array_equal(read_frame_ids(v.frames, encoded_size=encoded), v.indices)


# ---- sampling (pure) ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "total, n, expected",
    [
        (10, 4, [1, 3, 6, 8]),
        (300, 8, [18, 56, 93, 131, 168, 206, 243, 281]),
        (7, 3, [1, 5]),  # 3 rounds down to 2
        (100, 1, [25, 75]),  # minimum 2
        (6, 6, [0, 1, 2, 3, 4, 5]),
        (5, 8, [0, 1, 2, 3, 4, 4]),  # fewer frames than asked: all, last repeated to an even count
        (4, 8, [0, 1, 2, 3]),
        (1, 4, [0, 0]),
    ],
)
def test_uniform_indices_are_segment_middles(total, n, expected):
    idx = sample_indices(total, 30.0, "uniform", num_frames=n)
    assert idx.dtype == np.int64
    assert idx.tolist() == expected


def test_uniform_matches_formula_at_scale():
    total, n = 108_000, 1024  # an hour at 30 fps
    idx = sample_indices(total, 30.0, "uniform", num_frames=n)
    assert idx.tolist() == [math.floor((i + 0.5) * total / n) for i in range(n)]
    assert np.all(np.diff(idx) > 0)


def test_fps_sampling_count_and_cap():
    # 300 frames at 30 fps = 10 s.
    assert len(sample_indices(300, 30.0, "fps", fps=1.0)) == 10
    assert len(sample_indices(300, 30.0, "fps", fps=0.5)) == 4  # 5 rounds down to even
    assert len(sample_indices(300, 30.0, "fps", fps=2.0, max_frames=8)) == 8
    assert len(sample_indices(300, 30.0, "fps", fps=2.0, max_frames=7)) == 6
    assert sample_indices(300, 30.0, "fps", fps=100.0).tolist() == list(range(300))  # above native: every frame
    assert sample_indices(300, 30.0, "fps", fps=1.0).tolist() == sample_indices(300, 30.0, "uniform", num_frames=10)\
        .tolist()  # also segment middles
    with pytest.raises(ValueError):
        sample_indices(300, 30.0, "fps")
    with pytest.raises(ValueError):
        sample_indices(300, 30.0, "nope", num_frames=4)
    with pytest.raises(ValueError):
        sample_indices(0, 30.0, "uniform", num_frames=4)


def test_frames_for_token_budget():
    # 644x364 (a 640x360 video at Qwen2-VL defaults): 23 x 13 = 299 tokens per pair of frames.
    assert frames_for_token_budget(1000, 364, 644) == 6
    assert frames_for_token_budget(299, 364, 644) == 2
    assert frames_for_token_budget(298, 364, 644) == 0
    assert frames_for_token_budget(64 * 299, 364, 644) == 128
    with pytest.raises(ValueError):
        frames_for_token_budget(1000, 360, 640)


# ---- frame specs ----------------------------------------------------------------------------------------------


def test_frame_spec_validates_and_merges():
    assert FrameSpec(mode="auto", token_budget=100).mode is Sampling.auto
    for bad, match in ((dict(mode="random"), "frames.mode must be one of"), (dict(count=0), "frames.count"),
                       (dict(mode="fps"), "needs frames.fps"), (dict(mode="auto"), "needs frames.token_budget"),
                       (dict(max_pixels=-1), "frames.max_pixels")):
        with pytest.raises(ValueError, match=match):
            FrameSpec(**bad)
    protocol = FrameSpec(mode="linspace", count=512, longest_edge=480, sampler=lambda total, fps: [0, 1])
    merged = FrameSpec(count=64, longest_edge=0).over(protocol)  # command-line fields over the protocol's
    assert (merged.mode, merged.count, merged.longest_edge, merged.sampler) == (Sampling.linspace, 64, 0,
                                                                                protocol.sampler)
    assert merged.fill(min_pixels=5, count=3).min_pixels == 5 and merged.fill(count=3).count == 64
    assert FrameSpec().fixed_count() == 16 and FrameSpec(mode="linspace", count=8).fixed_count() == 8
    assert FrameSpec(mode="fps", fps=1.0).fixed_count() is None and protocol.fixed_count() is None


def test_frame_spec_is_a_structured_config():
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, ValidationError

    node = OmegaConf.structured(FrameSpec)
    assert "sampler" not in node  # a benchmark's sampler is set in code, never in a config
    spec = as_spec(OmegaConf.merge(node, OmegaConf.from_dotlist(["count=256", "mode=auto", "token_budget=16000"])))
    assert (spec.mode, spec.count, spec.token_budget, spec.fps) == (Sampling.auto, 256, 16000, None)
    assert as_spec({"count": 8}) == FrameSpec(count=8) and as_spec(None) == FrameSpec()
    with pytest.raises(ValidationError):
        OmegaConf.merge(node, OmegaConf.from_dotlist(["mode=random"]))
    with pytest.raises(ConfigKeyError):
        OmegaConf.merge(node, OmegaConf.from_dotlist(["num_frames=8"]))


def test_plan_counts_caps_and_sampler():
    # 300 frames of 48x64 at 30 fps; SMALL bounds keep 56x56: 4 tokens per 2 frames.
    idx, out, mid = plan(FrameSpec(mode="auto", token_budget=40, **SMALL), 300, 30.0, 48, 64)
    assert out == (56, 56) and mid is None and len(idx) == 20
    assert len(plan(FrameSpec(mode="auto", token_budget=40, count=6, **SMALL), 300, 30.0, 48, 64)[0]) == 6  # cap
    assert len(plan(FrameSpec(mode="fps", fps=1.0), 300, 30.0, 48, 64)[0]) == 10
    assert len(plan(FrameSpec(), 300, 30.0, 48, 64)[0]) == 16  # the default count
    first_last = FrameSpec(sampler=lambda total, fps: [0, total - 1], longest_edge=32, shortest_edge=28, start=5.0)
    idx, _, mid = plan(first_last, 300, 30.0, 48, 64)
    assert idx.tolist() == [0, 299] and mid == (28, 32)  # the sampler replaces mode and window
    with pytest.raises(ValueError, match="outside"):
        plan(FrameSpec(sampler=lambda total, fps: [total]), 300, 30.0, 48, 64)


# ---- resizing -------------------------------------------------------------------------------------------------


def test_target_size_defaults_are_qwen2vl_video_defaults():
    assert target_size(360, 640) == (364, 644)  # 149.5 tokens per frame, as in DESIGN.md
    for h, w in [(48, 64), (1080, 1920), (2160, 3840), (720, 1280), (100, 3000), (480, 270)]:
        th, tw = target_size(h, w)
        assert th % 28 == 0 and tw % 28 == 0
        assert FR.DEFAULT_MIN_PIXELS <= th * tw <= FR.DEFAULT_MAX_PIXELS
        assert abs(math.log((th / tw) / (h / w))) < 0.2  # aspect kept (up to 28-rounding)


@pytest.mark.parametrize("h, w", [(48, 64), (360, 640), (1080, 1920), (333, 1001), (1000, 1000)])
@pytest.mark.parametrize("lo, hi", [(28 * 28 * 4, 28 * 28 * 16), (56 * 56, 28 * 28 * 1280), (200_000, 300_000)])
def test_target_size_pixel_bounds(h, w, lo, hi):
    th, tw = target_size(h, w, min_pixels=lo, max_pixels=hi)
    assert th % 28 == 0 and tw % 28 == 0
    assert lo <= th * tw <= hi


def test_resize_frames():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(5, 48, 64, 3), dtype=np.uint8)
    out = resize_frames(frames, 56, 84)
    assert out.shape == (5, 56, 84, 3) and out.dtype == np.uint8
    small = resize_frames(frames, 28, 28)
    assert small.shape == (5, 28, 28, 3)
    # Saturated flat images stay exactly flat: overshoot is clamped, never wrapped around.
    for value in (0, 255):
        flat = np.full((2, 30, 40, 3), value, np.uint8)
        np.testing.assert_array_equal(resize_frames(flat, 56, 56), value)
    # Black/white edges overshoot with bicubic: values stay in range (no uint8 wrap) and close to the float path.
    edge = np.zeros((1, 48, 64, 3), np.uint8)
    edge[:, :, 32:] = 255
    up = resize_frames(edge, 112, 112)
    ref = torch.nn.functional.interpolate(torch.from_numpy(edge).permute(0, 3, 1, 2).float(), size=(112, 112),
                                          mode="bicubic", antialias=True).clamp(0, 255).round()
    assert np.abs(up.astype(np.float32) - ref.permute(0, 2, 3, 1).numpy()).mean() < 1.0
    np.testing.assert_array_equal(resize_frames(torch.from_numpy(frames), 48, 64), frames)  # tensors in, identity
    with pytest.raises(ValueError):
        resize_frames(frames.astype(np.float32), 28, 28)


# ---- decoding -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [2, 16, 64, 300, 1000])
def test_pyav_returns_requested_frames(clips, n, threads):
    v = load_video(clips["h264"], FrameSpec(count=n), backend="pyav", resize=False, threads=threads)
    assert v.backend == "pyav" and v.num_total_frames == 300 and v.fps == pytest.approx(30.0)
    assert v.duration == pytest.approx(10.0, abs=0.05)
    np.testing.assert_array_equal(v.indices, sample_indices(300, 30.0, "uniform", num_frames=n))
    _check_ids(v)
    np.testing.assert_allclose(v.timestamps, v.indices / 30.0, atol=1e-6)
    assert v.stats["frames_converted"] == len(np.unique(v.indices))  # only wanted frames go to RGB


def test_mpeg4_and_fps_mode(clips):
    v = load_video(clips["mpeg4"], FrameSpec(mode="fps", fps=3.0), backend="pyav", resize=False)
    assert len(v) == 12  # 4 s * 3 fps
    _check_ids(v)
    v = load_video(clips["h264"], FrameSpec(mode="fps", fps=2.0, count=8), resize=False)
    assert len(v) == 8
    _check_ids(v)


@needs_decord
@pytest.mark.parametrize("clip", ["h264", "mpeg4"])
def test_backends_agree(clips, clip):
    a = load_video(clips[clip], FrameSpec(count=16), backend="pyav", resize=False, threads=1)
    b = load_video(clips[clip], FrameSpec(count=16), backend="decord", resize=False, threads=1)
    assert (a.num_total_frames, a.fps) == (b.num_total_frames, pytest.approx(b.fps))
    np.testing.assert_array_equal(a.indices, b.indices)
    _check_ids(a)
    _check_ids(b)
    assert np.abs(a.frames.astype(np.int16) - b.frames.astype(np.int16)).mean() < 3
    np.testing.assert_allclose(a.timestamps, b.timestamps, atol=1e-3)
    # Resized output goes through the same resize, so it agrees too.
    a, b = (load_video(clips[clip], FrameSpec(count=8, **SMALL), backend=be) for be in ("pyav", "decord"))
    assert a.frames.shape == b.frames.shape == (8, 56, 56, 3)
    assert np.abs(a.frames.astype(np.int16) - b.frames.astype(np.int16)).mean() < 3


def test_resized_output_and_torch_layout(clips):
    v = load_video(clips["h264"], FrameSpec(count=8))  # defaults: Qwen2-VL video bounds -> 280x392
    assert v.frames.shape == (8, 280, 392, 3)
    _check_ids(v)
    t = v.to_torch()
    assert t.shape == (8, 3, 280, 392) and t.dtype == torch.uint8
    assert t.data_ptr() == v.frames.ctypes.data  # a view, no copy
    # The release's pre-resize first: 48x64 -> longest edge 32 -> 24x32 -> each side >= 28 -> 28x32; then the pixel
    # rule: 28x28 = 784 < 3136 pixels, scaled up to 56x84 (without the pre-resize 48x64 gives 56x56).
    v = load_video(clips["h264"], FrameSpec(count=8, longest_edge=32, shortest_edge=28, **SMALL))
    assert v.frames.shape == (8, 56, 84, 3) and load_video(clips["h264"], FrameSpec(count=8, **SMALL)).frames.shape \
        == (8, 56, 56, 3)
    _check_ids(v)


def test_auto_respects_token_budget(clips):
    for budget in (4, 10, 50, 333):
        v = load_video(clips["h264"], FrameSpec(mode="auto", token_budget=budget, **SMALL))
        per_pair = (v.frames.shape[1] // 28) * (v.frames.shape[2] // 28)
        assert per_pair == 4
        assert len(v) % 2 == 0 and len(v) // 2 * per_pair <= budget
        assert len(v) == min(budget // per_pair * 2, 300)  # as many as fit
        _check_ids(v, encoded=(48, 64))
    with pytest.raises(ValueError, match="token_budget"):
        load_video(clips["h264"], FrameSpec(mode="auto", token_budget=3, **SMALL))  # not even 2 frames fit
    with pytest.raises(ValueError):
        load_video(clips["h264"], FrameSpec(mode="auto"))


def test_short_video_pads_to_even(clips):
    v = load_video(clips["short"], FrameSpec(count=16), resize=False)
    assert v.indices.tolist() == [0, 1, 2, 3, 4, 5, 6, 6]
    _check_ids(v)
    np.testing.assert_array_equal(v.frames[-1], v.frames[-2])


def test_sparse_sampling_decodes_only_needed_spans(clips):
    total, gop = 1500, 50
    for n in (2, 8, 16):
        v = load_video(clips["long"], FrameSpec(count=n), backend="pyav", resize=False, threads=1)
        _check_ids(v)
        # Each sample costs at most the span from its keyframe (< gop) plus a few frames of decoder delay.
        assert v.stats["packets_decoded"] <= n * (gop + 8), v.stats
        assert v.stats["seeks"] >= 1
    for n in (2, 8, 64, 256, 1000, 1500):
        v = load_video(clips["long"], FrameSpec(count=n), backend="pyav", resize=False, threads=1)
        _check_ids(v)
        assert v.stats["packets_decoded"] <= total, v.stats  # never more than one pass
    # Non-reference frames that are not wanted are skipped by the decoder.
    assert v.stats["frames_decoded"] == total  # n=1500 wants every frame
    v = load_video(clips["long"], FrameSpec(count=64), backend="pyav", resize=False, threads=1)
    assert v.stats["frames_decoded"] < v.stats["packets_decoded"]


class _LateSeekContainer:
    """Container proxy whose seek lands one GOP late, to exercise the planner's step-back on overshoot."""

    def __init__(self, container, shift):
        self._c, self._shift = container, shift

    def seek(self, ts, **kw):
        return self._c.seek(ts + self._shift, **kw)

    def __getattr__(self, name):
        return getattr(self._c, name)


def test_seek_overshoot_steps_back(clips, monkeypatch):
    real_open = D._PyAVReader._open

    def late_open(self):
        container, stream = real_open(self)
        return _LateSeekContainer(container, int(30 / FPS / stream.time_base)), stream  # +1 s = +1 GOP

    monkeypatch.setattr(D._PyAVReader, "_open", late_open)
    v = load_video(clips["h264"], FrameSpec(count=8), backend="pyav", resize=False, threads=1)
    _check_ids(v)
    assert v.stats["packets_decoded"] <= 300


def test_wrong_keyframe_index_and_sequential_fallback(clips):
    path = str(clips["h264"])
    want = sample_indices(300, 30.0, "uniform", num_frames=16)
    # Claimed keyframes that are not keyframes: seeking lands earlier, decoding is longer but still right.
    r = D._PyAVReader(path, 1)
    r.key_idx = np.arange(0, 300, 7, dtype=np.int64)
    sink = D.FrameSink(len(want), (48, 64), (48, 64))
    got, _ = r.read(want, sink)
    np.testing.assert_array_equal(read_frame_ids(sink.finish()), want)
    np.testing.assert_array_equal(got, want)
    # No usable timestamps: frames are counted in one sequential pass.
    r = D._PyAVReader(path, 1)
    r.exact = False
    sink = D.FrameSink(len(want), (48, 64), (48, 64))
    got, times = r.read(want, sink)
    np.testing.assert_array_equal(read_frame_ids(sink.finish()), want)
    assert r.stats["mode"] == "sequential" and r.stats["seeks"] == 0
    np.testing.assert_allclose(times, want / 30.0)


class _NoPtsFrame:
    def __init__(self, frame):
        self._f, self.pts = frame, None

    def to_ndarray(self, **kw):
        return self._f.to_ndarray(**kw)


def test_frames_without_timestamps_fall_back_to_counting(clips, monkeypatch):
    real_decode = D._PyAVReader._decode
    def no_pts(self, packet):
        return [_NoPtsFrame(f) for f in real_decode(self, packet)]

    monkeypatch.setattr(D._PyAVReader, "_decode", no_pts)
    v = load_video(clips["h264"], FrameSpec(count=8), backend="pyav", resize=False, threads=1)
    assert v.stats["mode"] == "sequential"
    _check_ids(v)


# ---- bad input ------------------------------------------------------------------------------------------------


def _remux_faststart(src, dst):
    """Copy an mp4 with its index (moov) at the front, so a truncated copy still has an index."""
    with av.open(str(src)) as i, av.open(str(dst), "w", options={"movflags": "faststart"}) as o:
        si = i.streams.video[0]
        so = o.add_stream_from_template(si)
        for p in i.demux(si):
            if p.dts is not None:
                p.stream = so
                o.mux(p)


@pytest.mark.parametrize("backend", [None, "pyav", pytest.param("decord", marks=needs_decord)])
def test_bad_files_raise_video_read_error(tmp_path, clips, backend):
    data = clips["h264"].read_bytes()
    cases = {
        "missing": tmp_path / "missing.mp4",
        "empty": tmp_path / "empty.mp4",
        "text": tmp_path / "notes.mp4",
        "truncated": tmp_path / "half.mp4",  # cut in half: the index (moov, written last) is gone
        "directory": tmp_path / "dir.mp4",
    }
    cases["empty"].write_bytes(b"")
    cases["text"].write_text("this is not a video\n" * 50)
    cases["truncated"].write_bytes(data[: len(data) // 2])
    cases["directory"].mkdir()
    for name, path in cases.items():
        with pytest.raises(VideoReadError) as e:
            load_video(path, FrameSpec(count=4), backend=backend)
        assert str(path) in str(e.value), name
        assert isinstance(e.value, ValueError)


def test_error_messages_name_reason_and_backends(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("hello")
    with pytest.raises(VideoReadError, match="pyav") as e:
        load_video(p, FrameSpec(count=4))
    if HAS_DECORD:
        assert "decord" in str(e.value)  # backend=None tried both, once each
    with pytest.raises(VideoReadError, match="not found"):
        load_video(tmp_path / "nope.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty"):
        load_video(empty)


def test_truncated_with_index_decodes_what_exists(tmp_path, clips):
    """An mp4 whose index survives truncation (faststart): pyav decodes the frames that exist, all correct."""
    full = tmp_path / "fs.mp4"
    _remux_faststart(clips["h264"], full)
    data = full.read_bytes()
    cut = tmp_path / "fs_half.mp4"
    cut.write_bytes(data[: len(data) // 2])
    v = load_video(cut, FrameSpec(count=16), resize=False)  # default backend order starts with pyav
    assert v.backend == "pyav"
    assert 0 < v.num_total_frames < 300
    _check_ids(v)


@needs_decord
def test_fallback_to_the_other_backend(clips, monkeypatch):
    def broken(path, threads):
        raise RuntimeError("simulated decoder failure")

    monkeypatch.setitem(D.READERS, "pyav", broken)
    v = load_video(clips["h264"], FrameSpec(count=8), resize=False)
    assert v.backend == "decord"
    _check_ids(v)
    monkeypatch.setitem(D.READERS, "decord", broken)
    with pytest.raises(VideoReadError, match="simulated decoder failure") as e:
        load_video(clips["h264"], FrameSpec(count=8))
    assert "pyav" in str(e.value) and "decord" in str(e.value)


def test_argument_errors_are_not_read_errors(clips):
    with pytest.raises(ValueError) as e:
        load_video(clips["h264"], FrameSpec(mode="random"))
    assert not isinstance(e.value, VideoReadError)
    with pytest.raises(ValueError) as e:
        load_video(clips["h264"], backend="opencv")
    assert not isinstance(e.value, VideoReadError)


# ---- clip windows (MVBench bounded tasks) -----------------------------------------------------------------------
def test_clip_frames_window_arithmetic():
    from vamba.data.frames import clip_frames

    assert clip_frames(300, 30.0) == (0, 299)
    assert clip_frames(300, 30.0, 2.0, 4.0) == (60, 120)
    assert clip_frames(300, 30.0, None, 4.0) == (0, 120)
    assert clip_frames(300, 30.0, 9.0, 50.0) == (270, 299)  # an end past the video is clamped
    for start, end, match in ((4.0, 2.0, "before its end"), (-1.0, 2.0, ">= 0"), (11.0, None, "after the video")):
        with pytest.raises(ValueError, match=match):
            clip_frames(300, 30.0, start, end)


@pytest.mark.parametrize("sample", ["uniform", "fps"])
def test_clip_window_samples_only_inside_it(clips, sample):
    kwargs = dict(num_frames=8) if sample == "uniform" else dict(fps=2.0)
    v = load_video(clips["h264"], FrameSpec(mode=sample, count=kwargs.get("num_frames"), fps=kwargs.get("fps"),
                                            start=2.0, end=4.0), resize=False)
    _check_ids(v)  # the decoded frames really are the planned ones
    window = sample_indices(61, 30.0, sample, **kwargs)  # frames 60..120 are 61 frames
    np.testing.assert_array_equal(v.indices, 60 + window)
    assert v.indices.min() >= 60 and v.indices.max() <= 120
    with pytest.raises(ValueError, match="after the video"):
        load_video(clips["h264"], FrameSpec(count=8, start=20.0))


def test_frame_folder_is_sampled_like_a_video(tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(12):  # unpadded names: natural order, not string order
        Image.fromarray(np.full((56, 84, 3), 10 * i, dtype=np.uint8)).save(folder / f"frame_{i + 1}.png")
    (folder / "notes.txt").write_text("not a frame")
    v = load_video(folder, FrameSpec(count=4), folder_fps=3.0, resize=False)
    np.testing.assert_array_equal(v.indices, sample_indices(12, 3.0, "uniform", num_frames=4))
    np.testing.assert_array_equal(v.frames[:, 0, 0, 0], 10 * v.indices)
    assert v.backend == "frames" and v.duration == pytest.approx(4.0) and v.stats["images_read"] == 4
    np.testing.assert_allclose(v.timestamps, v.indices / 3.0)
    clip = load_video(folder, FrameSpec(count=2, start=1.0, end=2.0), folder_fps=3.0)  # frames 3..6
    np.testing.assert_array_equal(clip.indices, 3 + sample_indices(4, 3.0, "uniform", num_frames=2))
    assert clip.frames.shape[1:3] == target_size(56, 84)  # resized by the same rules as video files
    with pytest.raises(VideoReadError, match="needs folder_fps"):
        load_video(folder, FrameSpec(count=4))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoReadError, match="without image files"):
        load_video(empty, FrameSpec(count=4), folder_fps=3.0)
    (folder / "frame_13.png").write_bytes(b"broken")
    with pytest.raises(VideoReadError, match="frame_13.png: unreadable"):
        load_video(folder, FrameSpec(count=13), folder_fps=3.0)
