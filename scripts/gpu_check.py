#!/usr/bin/env python3
"""One-command GPU check (run it through scripts/gpu_check.sh): the fused kernels against our PyTorch path, and
Vamba against Qwen2-VL in memory and time at the 7B shapes of DESIGN.md section 2 (random weights, bf16, nothing
downloaded).

Prints one table, a row as each measurement finishes, and rewrites the JSON file (--out) after every row, so a
run that is cut short keeps what it measured.

1. parity: `Mamba2Mixer` at the 7B mixer shapes, fused path (mamba_ssm's Triton kernels) vs our PyTorch path, on
   whole + packed sequences and on uneven streamed pieces with seq_idx continuing across them (forward and every
   gradient), and on one-token decoding steps. float32: the kernels' tl.dot uses TF32 (torch's own matmuls do
   not), tolerance 5e-3 of the largest reference value. bf16: both paths against the float32 PyTorch result; the
   fused path passes within twice the PyTorch path's own bf16 error + 1e-2. Then flash-attention vs SDPA for
   packed text self-attention, when flash-attn is installed.
2. prefill: peak memory (torch.cuda.max_memory_allocated: weights, inputs and activations, as the paper's figure 4)
   and time, Vamba vs Qwen2-VL (logits_to_keep=1, and stock: logits for every position) at 16/64/256/1024 frames
   of 640x360; Qwen2-VL until it runs out of memory (caught); Vamba streaming (32-frame chunks) at 3,600 frames.
3. train: one training step (forward + backward, gradient checkpointing) at 16/64/128 frames, both models.

Beside each figure: the paper's value (DESIGN.md section 5, read off its plots) and the prediction of our memory
account (`vamba.efficiency.memory`; it covers prefill, not training). Mixers use the fused path when its parity
rows ran without error, else the PyTorch path (said in the rows).

By default every autotuned Triton kernel is pinned to its cheapest config (the one mamba_ssm's deterministic mode
picks) so that compiling all configs on a fresh machine stays out of the time budget; --autotune lets Triton tune.
`--tiny` runs all of it on CPU at the tests' tiny size in seconds (the test suite does).
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.metadata
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

F32_TOL = 5e-3
PARITY = {  # mixer shapes and input lengths of the parity rows
    "7b": {"length": 4096, "packed": [1000, 2000, 1096], "cuts": [3, 1500], "decode": 4, "flash": [700, 1300, 2096]},
    "tiny": {"length": 24, "packed": [10, 14], "cuts": [2, 9], "decode": 2, "flash": [5, 9, 6],
             "mixer": {"d_model": 16, "d_state": 16, "headdim": 16, "chunk_size": 32}},
}
JOBS = {  # (system, frames, train) in the order they run: the comparisons first, the likely out-of-memory last
    "7b": [("vamba", f, False) for f in (16, 64, 256, 1024)] + [("vamba_stream", 3600, False)]
    + [("vamba", f, True) for f in (16, 64, 128)]
    + [("qwen2vl", f, False) for f in (16, 64, 256)] + [("qwen2vl_stock", f, False) for f in (16, 64, 256)]
    + [("qwen2vl", f, True) for f in (16, 64, 128)] + [("qwen2vl", 1024, False), ("qwen2vl_stock", 1024, False)],
    "tiny": [("vamba", f, False) for f in (2, 4)] + [("vamba_stream", 12, False)] + [("vamba", f, True) for f in (2, 4)]
    + [(s, f, False) for s in ("qwen2vl", "qwen2vl_stock") for f in (2, 4)] + [("qwen2vl", f, True) for f in (2, 4)],
}
STREAM_CHUNK = {"7b": 32, "tiny": 4}
# The paper's training figure (A800 80GB, 7B, 640x360; DESIGN.md section 5): frames -> (Qwen2-VL, Vamba).
PAPER_TRAIN_MEMORY_GB = {16: (50.3, 44.4), 64: (67.0, 46.5), 128: (75.2, 52.8), 256: (None, 65.8), 512: (None, 76.5)}
PAPER_TRAIN_STEP_S = {16: (2.0, 2.01), 64: (5.58, 3.10), 128: (11.83, 5.02), 256: (None, 9.43), 512: (None, 16.1)}
LABEL = {"vamba": "Vamba", "vamba_stream": "Vamba streaming", "qwen2vl": "Qwen2-VL logits_to_keep=1",
         "qwen2vl_stock": "Qwen2-VL stock (all logits)"}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Report: the table, row by row, and the JSON file
# ----------------------------------------------------------------------------------------------------------------


class Report:
    """Rows of the one table; each `add` prints its row and rewrites the JSON file atomically."""

    COLUMNS = ("section", "what", "measured", "paper (DESIGN.md 5)", "account", "status")

    def __init__(self, out: Path, env: dict[str, Any]) -> None:
        self.out, self.env, self.rows, self.start = out, env, [], time.monotonic()
        print("| " + " | ".join(self.COLUMNS) + " |\n|" + "---|" * len(self.COLUMNS), flush=True)

    def add(self, section: str, what: str, measured: str = "-", paper: str = "-", account: str = "-",
            status: str = "ok", **data: Any) -> dict[str, Any]:
        row = {"section": section, "what": what, "measured": measured, "paper": paper, "account": account,
               "status": status, **data}
        self.rows.append(row)
        print("| " + " | ".join(str(row[k]) for k in ("section", "what", "measured", "paper", "account",
                                                      "status")) + " |", flush=True)
        self.write(complete=False)
        return row

    def write(self, complete: bool) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(self.out.name + ".tmp")
        doc = {"env": self.env, "complete": complete, "elapsed_s": round(time.monotonic() - self.start, 1),
               "rows": self.rows}
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        os.replace(tmp, self.out)


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
# 2-3. Prefill and training step
# ----------------------------------------------------------------------------------------------------------------


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _build(profile, kind: str, device: str, fused: bool = True, config=None) -> torch.nn.Module:
    """A randomly initialised model built directly on the device in the profile's dtype (no CPU copy)."""
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
    from vamba.modeling.mamba2 import Mamba1Mixer, Mamba2Mixer

    for module in model.modules():  # our mixers only: transformers' models have a `use_kernels` of their own
        if isinstance(module, (Mamba1Mixer, Mamba2Mixer)):
            module.use_kernels = fused
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
    res = measure_step(model, system, inputs, train, device, STREAM_CHUNK[profile.name])
    del inputs
    model.eval()
    return res["seconds"], (base + res["peak_bytes"]) / 1e9


def _paper(profile_name: str, system: str, frames: int, train: bool) -> tuple[str, float | None, float | None]:
    from vamba.efficiency.bench import PAPER_PREFILL_MEMORY_GB

    if profile_name != "7b":
        return "-", None, None
    i = 0 if system.startswith("qwen2vl") else 1
    if train:
        gb, s = PAPER_TRAIN_MEMORY_GB.get(frames, (None, None))[i], PAPER_TRAIN_STEP_S.get(frames, (None, None))[i]
        return ("-" if gb is None else f"{gb:.1f} GB, {s:.2f} s"), gb, s
    if system == "vamba_stream":
        return "-", None, None
    gb = PAPER_PREFILL_MEMORY_GB.get(frames, (None, None))[i]
    return _gb(gb), gb, None


def _warm_up_frames(jobs: list[tuple[str, int, bool]], profile_name: str, system: str, train: bool) -> int:
    """The smallest frame count of the kind's jobs (two chunks for the streaming prefill)."""
    if system == "vamba_stream":
        return 2 * STREAM_CHUNK[profile_name]
    return min(f for s, f, t in jobs if (s, t) == (system, train))


def run_jobs(report: Report, profile, device: str, fused: bool, deadline: float, device_gb: float | None,
             jobs: list[tuple[str, int, bool]] | None = None, measure=None) -> None:
    """The prefill and training rows (`jobs`, default the profile's), one model at a time. A kind of job stops at
    its first out-of-memory; any other error is reported and the next job runs. `measure` (default `_measure`)
    takes (model, profile, system, frames, train, device) and returns (seconds, peak GB)."""
    from vamba.efficiency.memory import memory_account

    measure, jobs = measure or _measure, jobs or JOBS[profile.name]
    model, built, warm, oom = None, None, set(), {}
    for system, frames, train in jobs:
        kind = "qwen2vl" if system.startswith("qwen2vl") else "vamba"
        section = "train" if train else "prefill"
        what = f"{LABEL[system]}, {frames} frames" + (" (PyTorch mixers)" if kind == "vamba" and not fused else "")
        paper, paper_gb, paper_s = _paper(profile.name, system, frames, train)
        account = None if train else memory_account(profile, system, frames, chunk_frames=STREAM_CHUNK[profile.name])
        fields = {"system": system, "frames": frames, "paper_gb": paper_gb, "paper_s": paper_s,
                  "account_gb": account and account.total_gb}
        row = {"paper": paper, "account": _gb(account and account.total_gb), **fields}
        if (system, train) in oom:
            report.add(section, what, status=f"OOM (at {oom[(system, train)]} frames)", **row)
            continue
        if time.monotonic() > deadline:
            report.add(section, what, status="skipped (time budget)", **row)
            continue
        if device_gb and account is not None and account.total_gb > 1.5 * device_gb:
            report.add(section, what, status=f"skipped: account predicts {account.total_gb:.0f} GB", **row)
            continue
        try:
            if built != kind:
                model = built = None
                model, built = _build(profile, kind, device, fused=fused), kind
            if (system, train) not in warm:  # first run of a kind (kernels, autotuning, allocator), not measured
                measure(model, profile, system, _warm_up_frames(jobs, profile.name, system, train), train, device)
                warm.add((system, train))
            seconds, peak = measure(model, profile, system, frames, train, device)
            report.add(section, what, measured=f"{_gb(peak)}, {seconds:.2f} s", status="ok", measured_gb=peak,
                       seconds=seconds, **row)
        except torch.cuda.OutOfMemoryError:
            oom[(system, train)] = frames
            report.add(section, what, status="OOM", **row)
        except Exception as exc:  # noqa: BLE001 - one failure must not end the check
            report.add(section, what, status=f"error: {type(exc).__name__}: {str(exc)[:200]}", **row)
        _free(device)
    del model
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
    parser.add_argument("--budget", type=float, default=360.0,
                        help="seconds after start when measurements not yet started are skipped (default 360: with "
                             "the last measurement and start-up, the run stays under 7 minutes)")
    parser.add_argument("--autotune", action="store_true", help="let Triton autotune (adds minutes on a new machine)")
    parser.add_argument("--skip-parity", action="store_true", help="measure memory and time only")
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
    from vamba.modeling.mamba_fused import load_kernels

    profile = get_profile("tiny" if args.tiny else "7b")
    env = _environment(device, args.autotune)
    env["fused_kernels_import"] = load_kernels() is not None
    if env["fused_kernels_import"] and device == "cuda" and not args.autotune:
        env["pinned_kernels"] = _pin_autotuners()
    _log("gpu_check: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    report = Report(args.out, env)
    dtypes = [torch.float32] if args.tiny else [torch.float32, torch.bfloat16]
    fused = False
    if not args.skip_parity:
        fused = kernel_parity(report, profile.name, device, dtypes) and device == "cuda"
        flash_vs_sdpa(report, profile, device)
    env["mixers"] = "fused" if fused else "PyTorch"
    run_jobs(report, profile, device, fused, start + args.budget, env.get("gpu_gb"))
    report.write(complete=True)
    bad = [r for r in report.rows if r["status"].startswith(("FAIL", "error"))]
    _log(f"gpu_check: {len(report.rows)} rows, {len(bad)} failed or errored, {time.monotonic() - start:.0f} s; "
         f"JSON: {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
