#!/usr/bin/env python3
"""One-command GPU check (run it through scripts/gpu_check.sh): the fused kernels against our PyTorch path, then
the speed of Vamba (fused mixers and PyTorch mixers) beside Qwen2-VL at the 7B shapes of DESIGN.md section 2
(random weights, bf16, nothing downloaded), in one call under 8 minutes on one 80 GB GPU.

Prints two tables (parity; speed), a row as each point finishes, and rewrites the JSON file (--out) after every
measurement, so a run that is cut short keeps what it measured.

1. parity: `Mamba2Mixer` at the 7B mixer shapes, fused path (mamba_ssm's Triton kernels) vs our PyTorch path, on
   whole + packed sequences and on uneven streamed pieces with seq_idx continuing across them (forward and every
   gradient), and on one-token decoding steps. float32: the kernels' tl.dot uses TF32 (torch's own matmuls do
   not), tolerance 5e-3 of the largest reference value. bf16: both paths against the float32 PyTorch result; the
   fused path passes within twice the PyTorch path's own bf16 error + 1e-2. Then flash-attention vs SDPA for
   packed text self-attention, when flash-attn is installed.
2. speed, side by side with Vamba / Qwen2-VL ratios: prefill at 16/64/256/1024 frames of 640x360 and one training
   step (forward + backward, gradient checkpointing, no optimizer) at 16/64/128 frames. Every point: one warm-up
   step at the same frame count, then the median of 3 timed steps and their spread (--tiny: one step); Vamba's
   fused and PyTorch mixers are timed alternately on one model. Peak memory (torch.cuda.max_memory_allocated) beside
   each.
3. one 7B Mamba-2 layer at 64k tokens, forward (no grad) and forward + backward, both paths, beside what the op
   count predicts for the PyTorch path (`vamba.efficiency.ops`: calls x 10 us or bytes / 3 TB/s).
4. one torch.profiler trace of a Vamba prefill (64 frames; PyTorch and fused mixers): the GPU-busy fraction (union
   of kernel intervals / wall time); the PyTorch path's trace is written beside the JSON. And which SDPA kernel
   the cross-attention ran on (the ATen op its call dispatched to: flash, efficient, cudnn or math).

By default every autotuned Triton kernel is pinned to its cheapest config (the one mamba_ssm's deterministic mode
picks) so that compiling all configs on a fresh machine stays out of the time budget; --autotune lets Triton tune.
`--tiny` runs all of it on CPU at the tests' tiny size in seconds (the test suite does).
"""

from __future__ import annotations

import argparse
import collections
import copy
import gc
import importlib.metadata
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

F32_TOL = 5e-3
PARITY = {  # mixer shapes and input lengths of the parity rows
    "7b": {"length": 4096, "packed": [1000, 2000, 1096], "cuts": [3, 1500], "decode": 4, "flash": [700, 1300, 2096]},
    "tiny": {"length": 24, "packed": [10, 14], "cuts": [2, 9], "decode": 2, "flash": [5, 9, 6],
             "mixer": {"d_model": 16, "d_state": 16, "headdim": 16, "chunk_size": 32}},
}
POINTS = {  # (section, frames) of the speed table, in the order they run
    "7b": [("prefill", f) for f in (16, 64, 256, 1024)] + [("train", f) for f in (16, 64, 128)],
    "tiny": [("prefill", f) for f in (2, 4)] + [("train", f) for f in (2, 4)],
}
REPS = {"7b": (1, 3), "tiny": (0, 1)}  # (warm-up steps at the same frame count, timed steps) per point
MIXER_TOKENS = {"7b": 65536, "tiny": 64}
PROFILE_FRAMES = {"7b": 64, "tiny": 4}
VARIANTS = ("qwen2vl", "fused", "pytorch")  # the speed table's columns: Qwen2-VL, Vamba fused, Vamba PyTorch
# The paper's training step (A800 80GB, 7B, 640x360; DESIGN.md section 5; per GPU of 8 under ZeRO-3): frames ->
# (Qwen2-VL, Vamba) seconds.
PAPER_TRAIN_STEP_S = {16: (2.0, 2.01), 64: (5.58, 3.10), 128: (11.83, 5.02)}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Report: the tables, row by row, and the JSON file
# ----------------------------------------------------------------------------------------------------------------


class Report:
    """Rows of the parity table (`add`) and of the speed table (`add_speed`); each prints its row and rewrites the
    JSON file atomically."""

    COLUMNS = ("section", "what", "measured", "paper (DESIGN.md 5)", "account", "status")
    SPEED = ("section", "what", "Qwen2-VL", "Vamba fused", "Vamba PyTorch", "fused / Qwen2-VL", "PyTorch / Qwen2-VL",
             "status")

    def __init__(self, out: Path, env: dict[str, Any]) -> None:
        self.out, self.env, self.rows, self.start, self.header = out, env, [], time.monotonic(), None

    def _print(self, columns: tuple[str, ...], cells: list[Any]) -> None:
        if self.header != columns:
            self.header = columns
            print("\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns), flush=True)
        print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)

    def add(self, section: str, what: str, measured: str = "-", paper: str = "-", account: str = "-",
            status: str = "ok", **data: Any) -> dict[str, Any]:
        row = {"section": section, "what": what, "measured": measured, "paper": paper, "account": account,
               "status": status, **data}
        self.rows.append(row)
        self._print(self.COLUMNS, [row[k] for k in ("section", "what", "measured", "paper", "account", "status")])
        self.write(complete=False)
        return row

    def add_speed(self, section: str, what: str, cells: dict[str, dict | str], status: str = "",
                  **data: Any) -> dict[str, Any]:
        """cells: per variant ("qwen2vl", "fused", "pytorch") a measurement {"seconds", "spread_s", "peak_gb",
        "runs"} or a status string; the ratios are of the medians."""
        row = {"section": section, "what": what, "status": status or "ok", **data,
               **{v: cells.get(v, "-") for v in VARIANTS}}
        for v in ("fused", "pytorch"):
            a, q = row[v], row["qwen2vl"]
            row[f"{v}_ratio"] = a["seconds"] / q["seconds"] if isinstance(a, dict) and isinstance(q, dict) else None
        self.rows.append(row)
        self._print(self.SPEED, [section, what, *(_cell(row[v]) for v in VARIANTS),
                                 *("-" if row[f"{v}_ratio"] is None else f"{row[f'{v}_ratio']:.2f}"
                                   for v in ("fused", "pytorch")), row["status"]])
        self.write(complete=False)
        return row

    def write(self, complete: bool) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(self.out.name + ".tmp")
        doc = {"env": self.env, "complete": complete, "elapsed_s": round(time.monotonic() - self.start, 1),
               "rows": self.rows}
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        os.replace(tmp, self.out)


def _cell(m: dict | str) -> str:
    if not isinstance(m, dict):
        return m
    return f"{m['seconds']:.3g} s ±{m['spread_s'] / 2:.2g}" + (f", {_gb(m['peak_gb'])}" if m.get("peak_gb") else "")


def _gb(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} GB" if x >= 1 else f"{x:.3g} GB"


def _environment(device: str, autotune: bool) -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": device, "autotune": "triton tunes" if autotune else "pinned to the cheapest config"}
    for dist in ("transformers", "triton", "mamba_ssm", "causal_conv1d", "flash_attn"):
        env[dist] = version(dist)
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env["gpu"], env["gpu_gb"] = props.name, round(props.total_memory / 1e9, 1)
    return env


# ----------------------------------------------------------------------------------------------------------------
# 1. Kernel parity
# ----------------------------------------------------------------------------------------------------------------


def _seq_idx(lengths: list[int], device) -> torch.Tensor:
    return torch.cat([torch.full((n,), i, dtype=torch.int32) for i, n in enumerate(lengths)])[None].to(device)


def _case_whole_packed(mixer, x, p):
    return torch.cat([mixer(x), mixer(x, seq_idx=_seq_idx(p["packed"], x.device))], dim=1)


def _case_streamed(mixer, x, p):
    seq_idx = _seq_idx(p["packed"], x.device)
    state = mixer.allocate_state(1)
    edges = [0, *p["cuts"], x.shape[1]]
    outs = [mixer(x[:, a:b], seq_idx=seq_idx[:, a:b], state=state) for a, b in zip(edges, edges[1:])]
    return torch.cat(outs, dim=1), state.ssm_state


def _case_decode(mixer, x, p):
    n = p["decode"]
    with torch.no_grad():
        state = mixer.allocate_state(1)
        mixer(x[:, :-n], state=state)
        steps = [mixer(x[:, t : t + 1], state=state) for t in range(x.shape[1] - n, x.shape[1])]
    return torch.cat(steps, dim=1), state.ssm_state


CASES = (("whole + packed, fwd+bwd", _case_whole_packed, True), ("streamed pieces, fwd+bwd", _case_streamed, True),
         ("1-token decoding steps", _case_decode, False))


def _run_case(mixer, x, fn, grad: bool, p, fused: bool) -> dict[str, torch.Tensor]:
    """Outputs (and gradients of a fixed random projection) of one case on one path, as float64."""
    mixer.use_kernels = fused
    mixer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(grad)
    result = fn(mixer, x, p)
    out, extra = result if isinstance(result, tuple) else (result, None)
    got = {"out": out.detach().double()}
    if extra is not None:
        got["state"] = extra.detach().double()
    if grad:
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device, out.dtype)
        (out * weight).sum().backward()
        got["grad input"] = x.grad.double()
        got.update({f"grad {n}": q.grad.double() for n, q in mixer.named_parameters() if q.grad is not None})
    mixer.zero_grad(set_to_none=True)
    return got


def _worst(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[float, str]:
    """Largest max|got - ref| / max|ref| over the compared tensors, and its name."""
    errs = {k: float((got[k] - v).abs().max() / v.abs().max().clamp_min(1e-30)) for k, v in ref.items()}
    if set(got) != set(ref):
        return float("inf"), "missing " + ", ".join(sorted(set(ref) ^ set(got)))
    name = max(errs, key=errs.get)
    return errs[name], name


def _parity_mixer(profile_name: str, device: str):
    from vamba.modeling.flavors import get_flavor
    from vamba.modeling.mamba2 import Mamba2Mixer

    spec = dict(PARITY["tiny"]["mixer"]) if profile_name == "tiny" else {"d_model": 3584, **get_flavor("7b").mixer}
    torch.manual_seed(0)
    mixer = Mamba2Mixer(spec.pop("d_model"), **spec, device=device, dtype=torch.float32)
    with torch.no_grad():  # constant-initialised parameters off their defaults, so a path ignoring one would show
        for param in (mixer.D, mixer.norm.weight, mixer.conv1d.bias):
            param.add_(0.5 * torch.randn_like(param))
    return mixer


def kernel_parity(report: Report, profile_name: str, device: str, dtypes: list[torch.dtype]) -> bool:
    """Parity rows; returns whether the fused path ran without error (the model measurements then use it)."""
    from vamba.modeling.mamba_fused import fused_kernels, load_kernels

    if load_kernels() is None:
        report.add("parity", "Mamba-2 fused vs PyTorch", status="skipped: mamba_ssm's Triton kernels do not import")
        return False
    if fused_kernels(True, torch.empty(0, device=device)) is None:
        report.add("parity", "Mamba-2 fused vs PyTorch", status="skipped: the fused path runs on CUDA (or in the "
                   "kernel test lane's interpreter)")
        return False
    p = PARITY[profile_name]
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 reference is fp32
    ref_mixer = _parity_mixer(profile_name, device)
    x = torch.randn(1, p["length"], ref_mixer.d_model, generator=torch.Generator().manual_seed(2)).to(device)
    fused_ok, refs = True, {}
    try:
        for dtype in dtypes:
            mixer = ref_mixer if dtype == torch.float32 else copy.deepcopy(ref_mixer).to(dtype)
            name = {torch.float32: "fp32 (TF32 in kernels)", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
            for label, fn, grad in CASES:
                what = f"Mamba-2 fused vs PyTorch, {name}: {label}"
                try:
                    if label not in refs:
                        refs[label] = _run_case(ref_mixer, x, fn, grad, p, fused=False)
                    fused = _run_case(mixer, x.to(dtype), fn, grad, p, fused=True)
                except Exception as exc:  # noqa: BLE001 - the check must go on and report
                    fused_ok = False
                    report.add("parity", what, status=f"error: {type(exc).__name__}: {str(exc)[:200]}")
                    continue
                err, where = _worst(fused, refs[label])
                if dtype == torch.float32:
                    tol, measured = F32_TOL, f"{err:.1e} ({where})"
                else:
                    pure_err, _ = _worst(_run_case(mixer, x.to(dtype), fn, grad, p, fused=False), refs[label])
                    tol, measured = 2 * pure_err + 1e-2, f"{err:.1e} ({where}); PyTorch path {pure_err:.1e}"
                report.add("parity", what, measured=measured, status=("ok" if err <= tol else "FAIL")
                           + f" (tol {tol:.1e})", error=err, worst=where, tolerance=tol)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return fused_ok


def flash_vs_sdpa(report: Report, profile, device: str) -> None:
    """Packed text self-attention (positions restarting per sample) through flash-attention 2 and SDPA."""
    what = "flash-attention 2 vs SDPA: packed text self-attention, 2 layers"
    if importlib.util.find_spec("flash_attn") is None or device != "cuda":
        report.add("parity", what, status="skipped: flash-attn not installed" if device == "cuda" else
                   "skipped: needs CUDA")
        return
    try:
        config = copy.deepcopy(profile.vamba)
        config.text_config.num_hidden_layers, config.vision_config.depth = 2, 1
        model = _build(profile, "vamba", device, config=config)
        lengths = PARITY[profile.name]["flash"]
        ids = torch.randint(7, 1000, (1, sum(lengths)), device=device)
        pos = torch.cat([torch.arange(n) for n in lengths])[None].to(device)
        outs = {}
        for impl in ("sdpa", "flash_attention_2"):
            model.set_attn_implementation(impl)
            with torch.no_grad():
                outs[impl] = model.model.language_model(input_ids=ids, position_ids=pos, use_cache=False)[0]
        ref = outs["sdpa"].double()
        err = float((outs["flash_attention_2"].double() - ref).abs().max() / ref.abs().max())
        report.add("parity", what, measured=f"{err:.1e}", status=("ok" if err <= 2e-2 else "FAIL") + " (tol 2e-2)",
                   error=err)
        del model
    except Exception as exc:  # noqa: BLE001
        report.add("parity", what, status=f"error: {type(exc).__name__}: {str(exc)[:200]}")
    _free(device)


# ----------------------------------------------------------------------------------------------------------------
# 2. Speed: prefill and training step, Qwen2-VL beside Vamba with fused and with PyTorch mixers
# ----------------------------------------------------------------------------------------------------------------


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _set_kernels(model: torch.nn.Module, fused: bool) -> None:
    """Our mixers' fused path on or off (transformers' models have a `use_kernels` of their own: left alone)."""
    from vamba.modeling.mamba2 import Mamba1Mixer, Mamba2Mixer

    for module in model.modules():
        if isinstance(module, (Mamba1Mixer, Mamba2Mixer)):
            module.use_kernels = fused


def _build(profile, kind: str, device: str, fused: bool = True, config=None) -> torch.nn.Module:
    """A randomly initialised model built directly on the device in the profile's dtype (no CPU copy), with
    gradient checkpointing on (used by the training steps)."""
    from transformers import Qwen2VLForConditionalGeneration

    from vamba import VambaForConditionalGeneration

    _free(device)
    torch.manual_seed(0)
    cls = Qwen2VLForConditionalGeneration if kind == "qwen2vl" else VambaForConditionalGeneration
    config = config or (profile.qwen2vl if kind == "qwen2vl" else profile.vamba)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(profile.dtype)
    try:
        with torch.device(device):
            model = cls(config)
    finally:
        torch.set_default_dtype(previous)
    model.to(device=device, dtype=profile.dtype).eval()
    _set_kernels(model, fused)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _measure(model, profile, system: str, frames: int, train: bool, device: str) -> tuple[float, float]:
    """One prefill (or training step): (seconds, peak GB of weights + inputs + activations)."""
    from vamba.efficiency.measure import build_inputs, measure_step
    from vamba.efficiency.memory import profile_geometry

    model.zero_grad(set_to_none=True)  # also after a step that ran out of memory
    inputs = build_inputs(profile, system, profile_geometry(profile, frames), profile.text_tokens, device,
                          profile.dtype)
    model.train(train)
    _free(device)
    base = torch.cuda.memory_allocated() if device == "cuda" else _bytes(model.parameters()) + _bytes(inputs.values())
    res = measure_step(model, system, inputs, train, device)
    del inputs
    model.eval()
    return res["seconds"], (base + res["peak_bytes"]) / 1e9


def _timed(runs: dict[str, Any], reps: tuple[int, int]) -> dict[str, dict | str]:
    """Time each of `runs` (name -> zero-argument step returning (seconds, peak GB)): reps = (warm-up steps, timed
    steps), each a round in which the runs alternate. Returns per name {"seconds" (median), "spread_s" (max - min),
    "peak_gb" (max), "runs"} or "OOM" / "error: ..."."""
    out: dict[str, Any] = {}
    for rep in range(sum(reps)):
        for name, step in runs.items():
            if isinstance(out.get(name), str):
                continue
            try:
                seconds, peak = step()
            except torch.cuda.OutOfMemoryError:
                out[name] = "OOM"
                _free("cuda")
                continue
            except Exception as exc:  # noqa: BLE001 - one failure must not end the check
                out[name] = f"error: {type(exc).__name__}: {str(exc)[:160]}"
                continue
            if rep >= reps[0]:
                out.setdefault(name, []).append((seconds, peak))
    return {k: v if isinstance(v, str) else {"seconds": statistics.median(s for s, _ in v), "spread_s": max(
        s for s, _ in v) - min(s for s, _ in v), "peak_gb": max((p for _, p in v if p is not None), default=None),
        "runs": [s for s, _ in v]} for k, v in out.items()}


def run_speed(report: Report, profile, device: str, fused_ok: bool, deadline: float, measure=None,
              points: list[tuple[str, int]] | None = None) -> None:
    """The speed table: Qwen2-VL's points first (its model then freed), then Vamba's, fused and PyTorch mixers
    alternating on one model; a row per point once both are done. A variant stops at its first out-of-memory
    (larger points are reported, not run); a point not started by `deadline` is skipped. `measure` (default
    `_measure`) takes (model, profile, system, frames, train, device) and returns (seconds, peak GB)."""
    measure, points = measure or _measure, points or POINTS[profile.name]
    cells: dict[tuple[str, int], dict[str, Any]] = {p: {} for p in points}
    for kind, variants in (("qwen2vl", ("qwen2vl",)), ("vamba", ("fused", "pytorch") if fused_ok else ("pytorch",))):
        model, stopped = None, {}
        for section, frames in points:
            train = section == "train"
            for v in variants:
                if (v, section) in stopped:
                    cells[section, frames][v] = f"OOM at {stopped[v, section]} frames"
            todo = [v for v in variants if (v, section) not in stopped]
            if not todo:
                continue
            if time.monotonic() > deadline:
                cells[section, frames].update({v: "skipped (time budget)" for v in todo})
                continue
            try:
                model = model or _build(profile, kind, device, fused=fused_ok)
            except torch.cuda.OutOfMemoryError:
                cells[section, frames].update({v: "OOM (building the model)" for v in todo})
                continue

            def step(v: str, frames=frames, train=train, model=model, kind=kind):
                if kind == "vamba":
                    _set_kernels(model, v == "fused")
                return measure(model, profile, kind, frames, train, device)

            got = _timed({v: (lambda v=v: step(v)) for v in todo}, REPS[profile.name])
            cells[section, frames].update(got)
            for v, m in got.items():
                if m == "OOM":
                    stopped[v, section] = frames
                _log(f"gpu_check: {section} {frames} frames {v}: {_cell(m)}")
            report.write(complete=False)
        del model
        _free(device)
    for (section, frames), c in cells.items():
        paper = PAPER_TRAIN_STEP_S.get(frames) if section == "train" and profile.name == "7b" else None
        what = f"{'prefill' if section == 'prefill' else 'training step'}, {frames} frames"
        report.add_speed(section, what, c, status=f"paper (8 GPUs): {paper[1] / paper[0]:.2f}" if paper else "",
                         frames=frames, paper_s=paper)


# ----------------------------------------------------------------------------------------------------------------
# 3. One Mamba-2 layer at 64k tokens, both paths, beside the op-count prediction
# ----------------------------------------------------------------------------------------------------------------


def mixer_layer(report: Report, profile, device: str, fused_ok: bool, deadline: float) -> None:
    """`Mamba2Mixer` at the profile's shapes over MIXER_TOKENS tokens: forward without autograd (prefill) and
    forward + backward, fused and PyTorch paths alternating (warm-up, median of 3)."""
    from vamba.efficiency.ops import mixer_counts
    from vamba.modeling.mamba2 import Mamba2Mixer

    tokens = MIXER_TOKENS[profile.name]
    if time.monotonic() > deadline:
        report.add_speed("mixer layer", f"Mamba-2 layer, {tokens:,} tokens", {}, status="skipped (time budget)")
        return
    from vamba.modeling.flavors import get_flavor

    d = profile.vamba.text_config.hidden_size
    torch.manual_seed(0)
    mixer = Mamba2Mixer(d, **get_flavor(profile.name).mixer, device=device, dtype=profile.dtype)
    x = torch.randn(1, tokens, d, device=device, dtype=profile.dtype)
    predicted = mixer_counts(tokens, profile.name)

    def run(fused: bool, grad: bool):
        mixer.use_kernels = fused
        xi = x.detach().requires_grad_(grad)
        _sync(device)
        start = time.perf_counter()
        with torch.set_grad_enabled(grad):
            out = mixer(xi)
            if grad:
                out.backward(torch.ones_like(out))
        _sync(device)
        mixer.zero_grad(set_to_none=True)
        return time.perf_counter() - start, None

    variants = {"fused": True, "pytorch": False} if fused_ok else {"pytorch": False}
    for grad, name in ((False, "forward (no grad)"), (True, "forward + backward")):
        got = _timed({v: (lambda f=f, g=grad: run(f, g)) for v, f in variants.items()}, REPS[profile.name])
        c = predicted["forward"] if not grad else predicted["forward (grad)"] + predicted["backward"]
        note = f"op count: {c.calls:,} calls, {c.bytes / 1e9:.1f} GB written: PyTorch path >= {c.seconds * 1e3:.1f} ms"
        if isinstance(got.get("fused"), dict) and isinstance(got.get("pytorch"), dict):
            note += f"; PyTorch / fused {got['pytorch']['seconds'] / got['fused']['seconds']:.2f}"
        report.add_speed("mixer layer", f"Mamba-2 layer, {tokens:,} tokens, {name}", got, status=note,
                         predicted_s=c.seconds, predicted_calls=c.calls, predicted_bytes=c.bytes)
    mixer = x = None  # freed before the next section (the closures above hold the names)
    _free(device)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------------------------
# 4. Where a Vamba prefill's time goes: GPU-busy fraction, and the cross-attention's SDPA kernel
# ----------------------------------------------------------------------------------------------------------------


class _SdpaSpy(TorchDispatchMode):
    """Records the ATen ops an SDPA call dispatched to while active: the fused kernels' own ops
    (`_scaled_dot_product_{flash,efficient,cudnn}_attention*`), or the math kernel's `_softmax`."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name.startswith("_scaled_dot_product") or name in ("_softmax", "_flash_attention_forward",
                                                                 "_efficient_attention_forward"):
            self.seen[name] += 1
        return func(*args, **(kwargs or {}))


def sdpa_kernels(model: torch.nn.Module, step) -> dict[str, int]:
    """The ops the cross-attention's SDPA calls dispatched to during `step()`; keys are ATen op names."""
    from vamba.modeling.cross_attention import VambaCrossAttention

    spy = _SdpaSpy()

    def enter(*_) -> None:  # hooks return None: a pre-hook's return value would replace the inputs
        spy.__enter__()

    def leave(*_) -> None:
        spy.__exit__(None, None, None)

    hooks = []
    for module in model.modules():
        if isinstance(module, VambaCrossAttention):
            hooks += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        step()
    finally:
        for h in hooks:
            h.remove()
    return dict(spy.seen)


def _backend(seen: dict[str, int]) -> str:
    for key, name in (("flash", "flash"), ("efficient", "efficient"), ("cudnn", "cudnn"), ("math", "math")):
        if any(key in op for op in seen):
            return name
    return "math" if "_softmax" in seen else "none seen"


def busy_fraction(prof, wall_s: float) -> float | None:
    """Union of the GPU kernels' intervals over the wall time of the profiled step; None without GPU events."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                   if e.device_type == torch.autograd.DeviceType.CUDA)
    if not spans:
        return None
    busy, (lo, hi) = 0.0, spans[0]
    for a, b in spans[1:]:
        if a > hi:
            busy, lo = busy + hi - lo, a
        hi = max(hi, b)
    return (busy + hi - lo) / 1e6 / wall_s


def where_time_goes(report: Report, profile, device: str, fused_ok: bool, trace: Path | None) -> None:
    """One profiled Vamba prefill per mixer path (after a warm-up): the GPU-busy fraction; and the SDPA kernel
    of the cross-attention in a prefill and a training step."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    frames = PROFILE_FRAMES[profile.name]
    try:
        model = _build(profile, "vamba", device, fused=fused_ok)
        cells, kernels = {}, {}
        for v in ("fused", "pytorch") if fused_ok else ("pytorch",):
            _set_kernels(model, v == "fused")
            for _ in range(REPS[profile.name][0]):  # warm-up
                _measure(model, profile, "vamba", frames, False, device)
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
            with torch_profile(activities=activities) as prof:
                seconds, peak = _measure(model, profile, "vamba", frames, False, device)
            busy = busy_fraction(prof, seconds)
            cells[v] = f"busy {busy:.0%} of {seconds:.3g} s" if busy is not None else f"no GPU ({seconds:.3g} s)"
            if trace is not None and v == "pytorch":
                prof.export_chrome_trace(str(trace))
            cells[v + "_busy"] = busy
            for train in (False, True):
                kernels[v, train] = _backend(sdpa_kernels(model, lambda t=train: _measure(
                    model, profile, "vamba", frames, t, device)))
        report.add_speed("profile", f"Vamba prefill, {frames} frames: GPU-busy fraction (torch.profiler)",
                         {v: cells[v] for v in cells if not v.endswith("_busy")},
                         busy={v: cells[v + "_busy"] for v in ("fused", "pytorch") if v + "_busy" in cells},
                         trace=str(trace) if trace else None)
        report.add_speed("sdpa", "cross-attention SDPA kernel (prefill / training step)",
                         {v: " / ".join(kernels[v, t] for t in (False, True)) for v, _ in kernels})
        model = None
    except Exception as exc:  # noqa: BLE001
        report.add_speed("profile", "Vamba prefill profile", {}, status=f"error: {type(exc).__name__}: {exc}"[:200])
    _free(device)


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------


def _pin_autotuners() -> int:
    """Pin each autotuned kernel of mamba_ssm's Triton modules to its cheapest config (block sizes x stages, the
    choice of mamba_ssm's deterministic mode), so nothing is benchmarked or compiled more than once."""
    from triton.runtime.autotuner import Autotuner

    def cost(config) -> int:
        blocks = 1
        for key, value in config.kwargs.items():
            blocks *= value if key.startswith("BLOCK_SIZE") else 1
        return blocks * (getattr(config, "num_stages", 1) or 1)

    pinned = 0
    for name, module in list(sys.modules.items()):
        if name.startswith("mamba_ssm.ops.triton") and module is not None:
            for obj in vars(module).values():
                if isinstance(obj, Autotuner) and len(obj.configs) > 1:
                    obj.configs, pinned = [min(obj.configs, key=cost)], pinned + 1
    return pinned


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run at the tests' tiny size")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="JSON file (default ./gpu_check.json)")
    parser.add_argument("--budget", type=float, default=390.0,
                        help="seconds after start when points not yet started are skipped (default 390: with the "
                             "last point and start-up, the run stays under 8 minutes)")
    parser.add_argument("--autotune", action="store_true", help="let Triton autotune (adds minutes on a new machine)")
    parser.add_argument("--skip-parity", action="store_true", help="measure speed only (fused path used untested)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.monotonic()
    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        _log("gpu_check: no CUDA device (run with --tiny for the CPU smoke run)")
        return 2
    try:
        import vamba.modeling.compat  # noqa: F401  (fails on a transformers release outside the tested range)
    except ImportError as e:
        _log(f"gpu_check: {e}; on a machine without network: scripts/gpu_wheels.sh (with network), then "
             "scripts/gpu_check.sh --wheels .whl")
        return 2
    from vamba.efficiency.memory import get_profile
    from vamba.modeling.mamba_fused import fused_kernels, load_kernels

    profile = get_profile("tiny" if args.tiny else "7b")
    env = _environment(device, args.autotune)
    env["fused_kernels_import"] = load_kernels() is not None
    if env["fused_kernels_import"] and device == "cuda" and not args.autotune:
        env["pinned_kernels"] = _pin_autotuners()
    _log("gpu_check: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    report = Report(args.out, env)
    dtypes = [torch.float32] if args.tiny else [torch.float32, torch.bfloat16]
    fused_ok = fused_kernels(True, torch.empty(0, device=device)) is not None
    if not args.skip_parity:
        fused_ok = kernel_parity(report, profile.name, device, dtypes) and fused_ok
        flash_vs_sdpa(report, profile, device)
    env["mixers"] = "fused and PyTorch" if fused_ok else "PyTorch only (fused kernels unavailable or failed parity)"
    deadline = start + args.budget
    mixer_layer(report, profile, device, fused_ok, deadline)
    run_speed(report, profile, device, fused_ok, deadline)
    where_time_goes(report, profile, device, fused_ok, args.out.with_suffix(".trace.json"))
    report.write(complete=True)
    bad = [r for r in report.rows if str(r["status"]).startswith(("FAIL", "error"))]
    _log(f"gpu_check: {len(report.rows)} rows, {len(bad)} failed or errored, {time.monotonic() - start:.0f} s; "
         f"JSON: {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
