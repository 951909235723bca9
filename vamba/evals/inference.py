"""One inference path for every front end (`vamba eval`, `vamba chat`, the lmms-eval adapter).

`load_model` reads a checkpoint (ours, the release's, or a stock Qwen2-VL) with its processor; `encode` runs a
video through Vamba once (vision tower, mixers, every layer's keys/values: the cache that questions fork), or, for
context parallel, this rank's slice of it; `answer` renders chat messages, primes the reply if asked, and decodes
(a plain greedy loop on the forked cache when nothing else is asked of `generate`, which gives the same tokens).
Qwen2-VL, whose video sits inline in the text, has nothing to encode once: `answer` then processes the messages
whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..data.processor import VambaProcessor, patchify
from ..modeling.compat import CACHE, LOAD_DEFAULTS
from ..modeling.errors import UsageError, check_checkpoint


@dataclass
class EvalModelConfig:
    path: str = "???"
    type: str = "vamba"  # vamba | qwen2_vl (the stock transformers model, video inline)
    processor: str | None = None  # processor directory (default: path); "tiny" for the offline tiny processor
    dtype: str = "auto"  # auto = bfloat16 on GPU, float32 on CPU
    attn_implementation: str = "sdpa"


def load_model(cfg: EvalModelConfig, device: torch.device):
    """(model, processor) for `vamba` or stock `qwen2_vl`, in eval mode on `device`."""
    from transformers import Qwen2VLForConditionalGeneration

    from ..modeling import VambaForConditionalGeneration

    if cfg.type not in ("vamba", "qwen2_vl"):
        raise UsageError(f"model.type must be 'vamba' or 'qwen2_vl', got {cfg.type!r}")
    if cfg.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, cfg.dtype)
    check_checkpoint(cfg.path, "model.path", hub_ids=False)
    cls = VambaForConditionalGeneration if cfg.type == "vamba" else Qwen2VLForConditionalGeneration
    model = cls.from_pretrained(cfg.path, dtype=dtype, attn_implementation=cfg.attn_implementation, **LOAD_DEFAULTS)
    model = model.to(device).eval()
    layout = "vamba" if cfg.type == "vamba" else "qwen2_vl"
    source = cfg.processor or cfg.path
    if source == "tiny":
        processor = VambaProcessor.tiny(patch_size=model.config.vision_config.patch_size, layout=layout)
    else:
        processor = VambaProcessor.from_pretrained(source, layout=layout)
    return model, processor


@dataclass
class Encoded:
    """A video ready for questions: its frames (for the messages) and, for Vamba, the cache to fork per question."""

    frames: Any
    cache: Any = None


def is_vamba(model) -> bool:
    return hasattr(model, "encode_video")


@torch.no_grad()
def encode(model, processor: VambaProcessor, frames, *, video_token_keep: float | None = None,
           chunk_frames: int | None = None, stream_above_frames: int | None = 256, context_parallel=None) -> Encoded:
    """Encode `frames` (T, H, W, 3) once (Vamba; Qwen2-VL keeps just the frames). `context_parallel`: a
    `vamba.parallel.ContextParallel`; this rank then encodes only its slice of the video, unless the video has
    fewer temporal patches than ranks (then every rank of the group encodes it whole)."""
    if not is_vamba(model):
        return Encoded(frames)
    device = next(model.parameters()).device
    pixels, grid = patchify(frames, processor.vision)
    if context_parallel is not None:
        cfg = model.config
        batch = {"input_ids": torch.tensor([[cfg.vision_start_token_id, cfg.vision_end_token_id]]),
                 "pixel_values_videos": pixels, "video_grid_thw": grid[None]}
        ctx = context_parallel.shard(batch, cfg).get("context_parallel")
        if ctx is not None:
            return Encoded(frames, model.encode_video(context_parallel=ctx))
    keep = video_token_keep if video_token_keep is not None and video_token_keep < 1 else None
    cache = model.encode_video(pixel_values_videos=pixels.to(device, model.dtype),
                               video_grid_thw=grid[None].to(device), video_token_keep=keep,
                               chunk_frames=chunk_frames, stream_above_frames=stream_above_frames)
    return Encoded(frames, cache)


@torch.no_grad()
def answer(model, processor: VambaProcessor, messages: list[dict], encoded: Encoded | None = None,
           generation: dict[str, Any] | None = None, prefix: str = "",
           video_token_keep: float | None = None) -> tuple[str, str]:
    """(prompt text, reply) for chat `messages` (their video items hold frames). With an `Encoded` that has a cache,
    only the text runs; otherwise the messages are processed whole (Qwen2-VL, or a Vamba prefill of every visual
    item they hold). `prefix` primes the reply; `generation`: `generate` keyword arguments (greedy by default)."""
    device = next(model.parameters()).device
    gen = {"max_new_tokens": 32, "do_sample": False, **(generation or {})}
    tokenizer = processor.tokenizer
    cached = encoded is not None and encoded.cache is not None
    if cached:
        text = processor.render(messages, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        extra: dict[str, Any] = {CACHE: encoded.cache.fork()}
    else:
        batch = processor(messages, add_generation_prompt=True)
        ids = batch.pop("input_ids")
        extra = {k: v.to(device) for k, v in batch.items() if k not in ("labels", "attention_mask")}
        if is_vamba(model) and video_token_keep is not None and video_token_keep < 1 and extra:
            extra["video_token_keep"] = video_token_keep
    if prefix:
        primed = tokenizer(prefix, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = torch.cat([ids, primed], dim=1)
        if "mm_token_type_ids" in extra:  # the primed tokens are text
            extra["mm_token_type_ids"] = torch.nn.functional.pad(extra["mm_token_type_ids"], (0, primed.shape[1]))
    ids = ids.to(device)
    stop = [processor.im_end_id, tokenizer.eos_token_id]
    if cached and not gen["do_sample"] and _plain_greedy(model):
        new_ids = _greedy(model, ids, extra[CACHE], gen["max_new_tokens"], set(stop))
    else:
        new_ids = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **extra, **gen,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=stop)[0, ids.shape[1]:]
    return processor.render(messages, add_generation_prompt=True) + prefix, processor.decode(new_ids)


def _plain_greedy(model) -> bool:
    """The fast greedy loop applies no logits processor: only when the checkpoint's generation config sets none
    that greedy `generate` would apply."""
    gc = getattr(model, "generation_config", None)
    return gc is None or ((gc.repetition_penalty or 1.0) == 1.0 and not gc.no_repeat_ngram_size
                          and not gc.bad_words_ids and not gc.suppress_tokens)


def _greedy(model, ids: torch.Tensor, cache, max_new_tokens: int, stop: set[int]) -> torch.Tensor:
    """Greedy decoding on a forked video cache without `generate`'s per-call setup, which dominates for short
    multiple-choice answers; gives the same tokens as `generate(do_sample=False)` (tested)."""
    out = []
    step_ids = ids
    for _ in range(max_new_tokens):
        logits = model(input_ids=step_ids, **{CACHE: cache}, use_cache=True, logits_to_keep=1).logits
        token = int(logits[0, -1].argmax())
        out.append(token)
        if token in stop:
            break
        step_ids = torch.tensor([[token]], device=ids.device)
    return torch.tensor(out, dtype=torch.long)
