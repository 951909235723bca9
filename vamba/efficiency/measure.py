"""One measured prefill or training step (time and peak memory), and a fresh subprocess to measure it in.

Peak memory is `torch.cuda.max_memory_allocated` on CUDA and the peak resident-set increase on CPU (Linux's mark
reset at the start; glibc's mmap threshold pinned in the subprocess so that freed tensors leave RSS):
docs/efficiency.md ("Measurement"). Used by `vamba bench` and scripts/gpu_check.py.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import Qwen2VLForConditionalGeneration

from vamba.modeling import VambaForConditionalGeneration
from vamba.modeling.compat import CACHE

from .memory import Profile, VideoGeometry, get_profile, profile_geometry


def build_inputs(profile: Profile, system: str, geom: VideoGeometry, text_tokens: int, device: str,
                 dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Random prefill inputs. Qwen2-VL: `[bos, vision_start, M video pads, vision_end, T prompt]` with
    `mm_token_type_ids` 2 on the pads; Vamba: `[bos, vision_start, vision_end, T prompt]`, the video apart.
    Pixels: (P, channels x temporal patch x patch^2) in the model dtype, drawn on the device."""
    config = profile.qwen2vl if system.startswith("qwen2vl") else profile.vamba
    pixels = torch.randn(geom.patches, geom.patch_row, generator=torch.Generator(device).manual_seed(0),
                         device=device, dtype=dtype)
    start, end, pad = config.vision_start_token_id, config.vision_end_token_id, config.video_token_id
    video = [pad] * geom.tokens if system.startswith("qwen2vl") else []
    prompt = [7 + i % 50 for i in range(text_tokens)]
    ids = torch.tensor([[config.text_config.bos_token_id, start, *video, end, *prompt]])
    out = {"input_ids": ids.to(device), "pixel_values_videos": pixels,
           "video_grid_thw": torch.tensor([geom.grid_thw], device=device)}
    return out | ({"mm_token_type_ids": (ids == pad).long().mul(2).to(device)} if video else {})


def run_prefill(model: torch.nn.Module, system: str, inputs: dict[str, torch.Tensor], chunk_frames: int) -> Any:
    """One prefill without autograd, as generation runs it; returns its logits and caches (keep them alive so
    that they count in the peak). "qwen2vl_stock" keeps the stock forward's logits for every position."""
    with torch.no_grad():
        if system == "vamba_stream":
            cache = model.encode_video(inputs["pixel_values_videos"], inputs["video_grid_thw"],
                                       chunk_frames=chunk_frames)
            return model(input_ids=inputs["input_ids"], **{CACHE: cache}, use_cache=True, logits_to_keep=1)
        return model(**inputs, use_cache=True, logits_to_keep=0 if system == "qwen2vl_stock" else 1)


def run_train_step(model: torch.nn.Module, system: str, inputs: dict[str, torch.Tensor]) -> float:
    """Forward + backward with the LM loss on the prompt tokens (no optimizer step); returns the loss."""
    labels = inputs["input_ids"].clone()
    if system.startswith("qwen2vl"):
        labels[inputs["mm_token_type_ids"] != 0] = -100
    out = model(**inputs, labels=labels, use_cache=False)
    out.loss.backward()
    return float(out.loss)


def _status_kb(name: str) -> int:
    return int(re.search(rf"^{name}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


@contextlib.contextmanager
def peak_memory(device: str) -> Iterator[dict[str, Any]]:
    """The block's peak memory increase, into the yielded dict ("peak_bytes", "method"); CPU needs Linux."""
    result: dict[str, Any] = {}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        yield result
        torch.cuda.synchronize()
        result.update(peak_bytes=torch.cuda.max_memory_allocated() - base, method="cuda max_memory_allocated")
        return
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak mark (VmHWM) to the current RSS
    base = _status_kb("VmRSS")
    yield result
    result.update(peak_bytes=(_status_kb("VmHWM") - base) * 1024, method="cpu peak RSS increase")


def measure_step(model: torch.nn.Module, system: str, inputs: dict[str, torch.Tensor], train: bool, device: str,
                 chunk_frames: int = 32) -> dict[str, Any]:
    """Time one prefill (or training step) and measure its peak increase: {"seconds", "peak_bytes", "method"}."""
    with peak_memory(device) as mem:
        start = time.perf_counter()
        out = run_train_step(model, system, inputs) if train else run_prefill(model, system, inputs, chunk_frames)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    del out
    model.zero_grad(set_to_none=True)
    return {"seconds": seconds, **mem}


_MODEL: dict[tuple, torch.nn.Module] = {}  # the last model built, for the next spec of the same kind


def measure_in_process(spec: dict[str, Any]) -> dict[str, Any]:
    """Build `spec`'s model (random weights), warm up with one step at the same frame count (kernels, thread pools,
    allocator and caches as the measured step finds them), measure. Keys: profile, system, frames; optional:
    device, train, height, width, chunk_frames, text_tokens, threads, warmup_frames (a memory-only check's)."""
    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    profile, system = get_profile(spec["profile"]), spec["system"]
    device, train = spec.get("device", "cpu"), bool(spec.get("train"))
    kind = "qwen2vl" if system.startswith("qwen2vl") else "vamba"
    key = (spec["profile"], kind, device, train)
    if key not in _MODEL:
        _MODEL.clear()
        torch.manual_seed(0)
        cls = Qwen2VLForConditionalGeneration if kind == "qwen2vl" else VambaForConditionalGeneration
        _MODEL[key] = cls(getattr(profile, kind)).to(device=device, dtype=profile.dtype).train(train)
        if train:
            _MODEL[key].gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        gc.collect()
        gc.freeze()  # long-lived objects out of the collector's reach: the gc.collect() of a baseline is quick

    def step(frames: int) -> dict[str, Any]:
        geom = profile_geometry(profile, frames, spec.get("height"), spec.get("width"))
        inputs = build_inputs(profile, system, geom, spec.get("text_tokens") or profile.text_tokens, device,
                              profile.dtype)
        return measure_step(_MODEL[key], system, inputs, train, device, spec.get("chunk_frames") or 32)

    step(spec.get("warmup_frames") or spec["frames"])
    res = step(spec["frames"])
    return {"status": "ok", "seconds": res["seconds"], "peak_gb": res["peak_bytes"] / 1e9, "method": res["method"]}


def measure_batch(specs: list[dict[str, Any]], timeout_s: float | None = None) -> list[dict[str, Any]]:
    """`measure_in_process` for each spec, in order, in ONE fresh subprocess (a clean allocator and peak; a crash
    or out-of-memory kill loses only its own results, reported as status "failed ..." or "timeout")."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
                                                                   os.environ.get("PYTHONPATH")])))
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")  # allocations of 64 KiB and more unmapped when freed
    cmd = [sys.executable, "-m", "vamba.efficiency.measure", json.dumps(specs)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        stdout, error = proc.stdout, proc.stderr or proc.stdout
        lost = "failed (killed: out of memory?)" if proc.returncode in (-9, 137) else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired as exc:
        stdout, error, lost = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or "", "", "timeout"
    results = [json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT ")]
    return results + [{"status": lost, "error": error[-1500:]}] * (len(specs) - len(results))


if __name__ == "__main__":
    for one in json.loads(sys.argv[1]):
        print("RESULT " + json.dumps(measure_in_process(one)), flush=True)
