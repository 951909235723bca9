"""One measured prefill or training step: inputs in each model's layout, the step, its time and peak memory.

Peak memory: on CUDA `torch.cuda.max_memory_allocated` above the allocation at the start; on CPU the peak resident
set increase, with Linux's peak mark reset at the start (/proc/self/clear_refs) and glibc's mmap threshold pinned
in the fresh subprocess of `measure_batch`, so freed tensors leave RSS (`tracemalloc` does not see torch's
allocations). Used by `vamba bench`, scripts/gpu_check.py and scripts/bench_context_parallel.py.
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
from vamba.modeling.tiny import random_video

from .memory import Profile, VideoGeometry, get_profile, profile_geometry


def build_inputs(profile: Profile, system: str, geom: VideoGeometry, text_tokens: int, device: str,
                 dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Random prefill inputs. Qwen2-VL: `[bos, vision_start, M video pads, vision_end, T prompt]` with
    `mm_token_type_ids` 2 on the pads; Vamba: `[bos, vision_start, vision_end, T prompt]` and the video apart.
    Pixels (P, channels x temporal patch x patch^2) in the model dtype, drawn on the device off the CPU."""
    config = profile.qwen2vl if system.startswith("qwen2vl") else profile.vamba
    if torch.device(device).type == "cpu":
        pixels, grid = random_video(config, geom.frames, geom.resized_height, geom.resized_width,
                                    generator=torch.Generator().manual_seed(0))
        pixels = pixels.to(dtype=dtype)
    else:  # an hour of video is gigabytes of pixels
        pixels = torch.randn(geom.patches, geom.patch_row, device=device, dtype=dtype,
                             generator=torch.Generator(device=device).manual_seed(0))
        grid = torch.tensor([list(geom.grid_thw)])
    bos = config.text_config.bos_token_id
    start, end, M = config.vision_start_token_id, config.vision_end_token_id, geom.tokens
    prompt = [7 + (i % 50) for i in range(text_tokens)]
    out = {"pixel_values_videos": pixels, "video_grid_thw": grid.to(device)}
    if system.startswith("qwen2vl"):
        ids = torch.tensor([[bos, start] + [config.video_token_id] * M + [end] + prompt])
        out["mm_token_type_ids"] = (ids == config.video_token_id).long().mul(2).to(device)
        return {"input_ids": ids.to(device), **out}
    return {"input_ids": torch.tensor([[bos, start, end] + prompt]).to(device), **out}


def run_prefill(model: torch.nn.Module, system: str, inputs: dict[str, torch.Tensor], chunk_frames: int) -> Any:
    """One prefill without autograd, as generation runs it; returns its logits and caches (keep them alive so
    that they count in the peak)."""
    with torch.no_grad():
        if system == "qwen2vl_stock":  # the stock forward's logits for every position
            return model(**inputs, use_cache=True)
        if system == "vamba_stream":
            cache = model.encode_video(inputs["pixel_values_videos"], inputs["video_grid_thw"],
                                       chunk_frames=chunk_frames)
            return model(input_ids=inputs["input_ids"], past_key_values=cache, use_cache=True, logits_to_keep=1)
        return model(**inputs, use_cache=True, logits_to_keep=1)


def run_train_step(model: torch.nn.Module, system: str, inputs: dict[str, torch.Tensor]) -> float:
    """Forward + backward with the LM loss on the prompt tokens (no optimizer step); returns the loss."""
    labels = inputs["input_ids"].clone()
    if system.startswith("qwen2vl"):
        labels[inputs["mm_token_type_ids"] != 0] = -100
    out = model(**inputs, labels=labels, use_cache=False)
    out.loss.backward()
    return float(out.loss)


def _status_kb(name: str) -> int | None:
    with contextlib.suppress(OSError):
        m = re.search(rf"^{name}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
        return int(m.group(1)) if m else None
    return None


@contextlib.contextmanager
def peak_memory(device: str) -> Iterator[dict[str, Any]]:
    """The block's peak memory increase, into the yielded dict ("peak_bytes", "method"). On CPU without
    /proc (not Linux) the process's lifetime peak is used: an upper bound."""
    result: dict[str, Any] = {}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        yield result
        torch.cuda.synchronize()
        result.update(peak_bytes=torch.cuda.max_memory_allocated() - base, method="cuda max_memory_allocated")
        return
    import resource

    gc.collect()
    base = _status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak mark (VmHWM) to the current RSS
        exact = base is not None
    except OSError:
        exact = False
    base = base if base is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield result
    peak = _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result.update(peak_bytes=(peak - base) * 1024,
                  method="cpu peak RSS increase" + ("" if exact else " (lifetime peak: upper bound)"))


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


_MODELS: dict[tuple, torch.nn.Module] = {}


def measure_in_process(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the model of `spec` (random weights; one kept for the next spec of the same kind), warm up on one
    temporal patch, then measure. Keys: profile, system, frames, and optionally device, train, height, width,
    chunk_frames, text_tokens, threads."""
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    profile, system = get_profile(spec["profile"]), spec["system"]
    device, train = spec.get("device", "cpu"), bool(spec.get("train"))
    kind = "qwen2vl" if system.startswith("qwen2vl") else "vamba"
    if (spec["profile"], kind, device, train) not in _MODELS:
        _MODELS.clear()
        gc.collect()
        torch.manual_seed(0)
        cls = Qwen2VLForConditionalGeneration if kind == "qwen2vl" else VambaForConditionalGeneration
        model = cls(getattr(profile, kind)).to(device=device, dtype=profile.dtype).train(train)
        if train:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        _MODELS[(spec["profile"], kind, device, train)] = model
        gc.collect()
        gc.freeze()  # long-lived objects out of the collector's reach: gc.collect() before a baseline is quick
    model = _MODELS[(spec["profile"], kind, device, train)]

    def inputs(frames: int) -> dict[str, torch.Tensor]:
        geom = profile_geometry(profile, frames, spec.get("height"), spec.get("width"))
        return build_inputs(profile, system, geom, spec.get("text_tokens") or profile.text_tokens, device,
                            profile.dtype)

    chunk = spec.get("chunk_frames") or 32
    measure_step(model, system, inputs(profile.qwen2vl.vision_config.temporal_patch_size), train, device, chunk)
    res = measure_step(model, system, inputs(spec["frames"]), train, device, chunk)
    gc.collect()
    return {"status": "ok", "seconds": res["seconds"], "peak_gb": res["peak_bytes"] / 1e9, "method": res["method"]}


def measure_batch(specs: list[dict[str, Any]], timeout_s: float | None = None) -> list[dict[str, Any]]:
    """`measure_in_process` for each spec, in order, in ONE fresh subprocess (a clean allocator and peak; a crash
    or out-of-memory kill loses only its own results, reported as status "failed ..." or "timeout")."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
                                                                   os.environ.get("PYTHONPATH")])))
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")  # allocations >= 64 KiB mmapped, unmapped when freed
    cmd = [sys.executable, "-m", "vamba.efficiency.measure", json.dumps(specs)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        stdout, error = proc.stdout, proc.stderr or proc.stdout
        lost = "failed (killed: out of memory?)" if proc.returncode in (-9, 137) else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        stdout, error, lost = out.decode() if isinstance(out, bytes) else out, "", "timeout"
    results = [json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT ")]
    return results + [{"status": lost, "error": error[-1500:]}] * (len(specs) - len(results))


if __name__ == "__main__":
    for one in json.loads(sys.argv[1]):
        print("RESULT " + json.dumps(measure_in_process(one)), flush=True)
