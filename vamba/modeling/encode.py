"""Encoding a video once for generation: the whole prefill, a streamed prefill, or one context-parallel slice.

`VambaForConditionalGeneration.encode_video` / `.encode_video_streaming` call these. The result is a `VambaCache`
holding every layer's video keys/values, to `fork()` per question: decoding then runs only the text path.
"""

from __future__ import annotations

import torch

from .cache import VambaCache
from .video_slice import SliceContext
from .video_stream import grid_positions


@torch.no_grad()
def encode_video(
    model,
    pixel_values_videos: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    pixel_values: torch.Tensor | None = None,
    image_grid_thw: torch.Tensor | None = None,
    video_token_keep: float | None = None,
    chunk_frames: int | None = None,
    stream_above_frames: int | None = 256,
    context_parallel: SliceContext | None = None,
) -> VambaCache:
    """Encode the visual items of ONE sample once: vision tower, mixers and every layer's video keys/values.

    Returns a cache to `fork()` per question: `generate(input_ids=<prompt with its markers>,
    past_key_values=cache.fork())` (`cache=` from transformers 5.24, `compat.CACHE`) then runs only the text path
    (no vision tower, no mixer, no projection of the video), exactly as the video's first question would after its
    prefill.

    `chunk_frames` streams a single video through the network `chunk_frames` frames at a time (see
    `encode_video_streaming`): peak activation memory then no longer grows with the number of frames. By
    default a single video longer than `stream_above_frames` frames is streamed in 64-frame chunks (when
    the mixer keeps a state: Mamba-2 or none); `stream_above_frames=None` turns that off.

    `context_parallel` (from `vamba.parallel.ContextParallel.shard`): encode only this rank's slice of the
    sample's video; the cache keeps this slice's keys/values and decoding merges the slices every step.
    """
    if context_parallel is not None:
        return _encode_slice(model, context_parallel)
    tp = model.config.vision_config.temporal_patch_size
    single = pixel_values is None and video_grid_thw is not None and len(video_grid_thw) == 1
    stateful = model.config.text_config.mixer_type != "mamba1"
    no_drop = video_token_keep is None or video_token_keep >= 1
    long_video = single and stream_above_frames is not None and int(video_grid_thw[0, 0]) * tp > stream_above_frames
    if chunk_frames is None and stateful and no_drop and long_video:
        chunk_frames = 64
    if chunk_frames is not None and single:
        return model.encode_video_streaming(pixel_values_videos, video_grid_thw, chunk_frames, video_token_keep)
    n_images = 0 if image_grid_thw is None else len(image_grid_thw)
    n_videos = 0 if video_grid_thw is None else len(video_grid_thw)
    if n_images + n_videos == 0:
        raise ValueError("encode_video needs pixel_values_videos/video_grid_thw or pixel_values/image_grid_thw")
    return _encode_markers(model, [1] * n_images + [2] * n_videos, pixel_values=pixel_values,
                           image_grid_thw=image_grid_thw, pixel_values_videos=pixel_values_videos,
                           video_grid_thw=video_grid_thw, video_token_keep=video_token_keep)


def _encode_slice(model, ctx: SliceContext) -> VambaCache:
    """`encode_video` for one slice of a video split over a group (every rank of the group calls it)."""
    return _encode_markers(model, [1 if kind == "image" else 2 for kind, *_ in ctx.plan.items], context_parallel=ctx)


def _encode_markers(model, kinds: list[int], **visual) -> VambaCache:
    """Run the model over one `<|vision_start|><|vision_end|>` pair per visual item (kind 1 image, 2 video, in
    the order the items are passed) with `visual`'s pixels, filling and returning a fresh cache."""
    cfg = model.config
    device = model.model.visual.get_device()
    ids = [cfg.vision_start_token_id, cfg.vision_end_token_id] * len(kinds)
    types = [k for kind in kinds for k in (kind, 0)]
    cache = VambaCache(config=cfg.get_text_config(decoder=True))
    model.model(input_ids=torch.tensor([ids], device=device), mm_token_type_ids=torch.tensor([types], device=device),
                cache=cache, use_cache=True, **visual)
    return cache


def encode_video_streaming(
    model,
    pixel_values_videos: torch.Tensor,
    video_grid_thw: torch.Tensor,
    chunk_frames: int,
    video_token_keep: float | None = None,
) -> VambaCache:
    """Streaming prefill of one video, `chunk_frames` frames at a time (DESIGN.md section 2, two streams).

    Video tokens meet only the mixers (recurrences) and the cross-attention keys/values (per token), so the
    video can be pushed through in chunks: the vision tower on the chunk (it attends within each temporal
    patch, so chunking along time is exact), then every layer appends its keys/values to the cache and
    runs its mixer carrying the conv and SSM state into the next chunk. Equals `encode_video` up to float
    rounding; only the key/value cache grows with the number of frames.
    """
    if video_token_keep is not None and video_token_keep < 1:
        raise ValueError("video_token_keep with streaming is not supported; drop tokens or stream, not both")
    lm = model.model.language_model
    tcfg = lm.config
    if tcfg.mixer_type == "mamba1":
        raise ValueError("streaming prefill needs a stateful mixer: mixer_type mamba2 or none")
    t, h, w = (int(x) for x in video_grid_thw[0])
    tp = model.config.vision_config.temporal_patch_size
    step = max(1, chunk_frames // tp)  # temporal patches per chunk
    rows_per_t = h * w
    merge = model.model.visual.spatial_merge_size
    cache = VambaCache(config=model.config.get_text_config(decoder=True))
    layers = lm.layers
    states = [
        layer.vision_mixer.mixer.allocate_state(1) if layer.vision_mixer is not None else None for layer in layers
    ]
    # Keys/values are written in place into buffers of the final size: concatenating per-chunk lists at the end
    # would hold the whole cache twice, which at hour-long lengths is the peak.
    total = t * (h // merge) * (w // merge)
    kv_bufs: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(layers)
    done = 0
    dtype = lm.embed_tokens.weight.dtype
    use_rope = tcfg.cross_attn_use_position_embeddings
    for t0 in range(0, t, step):
        t1 = min(t, t0 + step)
        grid = torch.tensor([[t1 - t0, h, w]], device=video_grid_thw.device)
        pixels = pixel_values_videos[t0 * rows_per_t : t1 * rows_per_t].type(model.model.visual.dtype)
        v = model.model.visual(pixels, grid_thw=grid).pooler_output.to(dtype)[None]  # (1, m, d)
        key_rope = None
        if use_rope:
            pos = grid_positions((t1 - t0, h // merge, w // merge), v.device)
            pos[0] += t0
            key_rope = lm.rotary_emb(v, pos[:, None, :])
        n = v.shape[1]
        for i, layer in enumerate(layers):
            (k, val), v = layer.video_step(v, key_rope, state=states[i], update=i < len(layers) - 1)
            if kv_bufs[i] is None:
                kv_bufs[i] = (
                    k.new_empty(*k.shape[:2], total, k.shape[3]),
                    val.new_empty(*val.shape[:2], total, val.shape[3]),
                )
            kv_bufs[i][0][:, :, done : done + n] = k
            kv_bufs[i][1][:, :, done : done + n] = val
        done += n
    cache.video_kv = {i: kv for i, kv in enumerate(kv_bufs)}
    cache.video_visible = torch.ones(1, total, dtype=torch.bool, device=pixel_values_videos.device)
    return cache
