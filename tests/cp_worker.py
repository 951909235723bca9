"""torchrun worker for the context-parallel exactness tests (tests/test_context_parallel.py).

Every rank builds the same tiny float64 Vamba and inputs, computes the single-device reference itself, then the
context-parallel run of its group, and compares loss, logits and every parameter gradient (the group's gradients
summed, divided by the group size: what DDP/ZeRO averaging yields). Rank 0 writes the worst relative errors as JSON.

Usage: torchrun --nproc_per_node=W tests/cp_worker.py OUT.json SCENARIO[,SCENARIO...]: one launch runs several;
OUT.json maps each scenario to its per-rank results. Scenarios: long (one long video), uneven (slices of unequal
length), packed (two samples in one row, the cut inside the second video), images (a packed row with an image sample
and a video sample), decode (prefill and 8 greedy steps from the sharded cache), zero3 (DeepSpeed ZeRO-3 engine
gradients).
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from vamba.modeling import VambaForConditionalGeneration
from vamba.modeling.compat import CACHE
from vamba.modeling.tiny import BOS, VISION_END, VISION_START, random_video, tiny_vamba_config
from vamba.parallel import ContextParallel, launch


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def grad_errors(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> dict[str, float]:
    """Relative error per parameter; gradients that are zero in exact arithmetic (e.g. a key bias, which softmax
    ignores) are measured against 1e-9 of the largest gradient norm instead of their own rounding noise."""
    floor = 1e-9 * max(float(g.norm()) for g in ref.values())
    return {n: float((got[n] - g).norm()) / max(float(g.norm()), floor) for n, g in ref.items()}


def build_model() -> VambaForConditionalGeneration:
    torch.manual_seed(0)
    cfg = tiny_vamba_config(mixer_config={"d_state": 16, "headdim": 16, "chunk_size": 4})
    model = VambaForConditionalGeneration(cfg).double()
    with torch.no_grad():  # alpha and norms away from their init so every path carries weight
        for name, p in model.named_parameters():
            if name.endswith("alpha") or "layernorm" in name or name.endswith("D"):
                p.uniform_(0.3, 0.9)
    return model


def inputs(scenario: str) -> dict:
    """One row; frames of 16x16 at patch 4 = 4 tokens per temporal patch after the 2x2 merge."""
    gen = torch.Generator().manual_seed(1)
    cfg = tiny_vamba_config()
    if scenario in ("packed", "images"):
        frames = (6, 10) if scenario == "packed" else (2, 10)
        a, ga = random_video(cfg, frames=frames[0], generator=gen)
        b, gb = random_video(cfg, frames=frames[1], generator=gen)
        s1 = [BOS, VISION_START, VISION_END, 11, 12, 13, 14]
        s2 = [BOS, 21, VISION_START, VISION_END, 22, 23, 24, 25, 26]
        ids = torch.tensor([s1 + s2])
        pos = torch.tensor([list(range(len(s1))) + list(range(len(s2)))])
        types = torch.zeros_like(ids)
        types[0, 1], types[0, len(s1) + 2] = (1 if scenario == "images" else 2), 2
        batch = {"input_ids": ids, "position_ids": pos, "labels": ids.clone(), "mm_token_type_ids": types}
        if scenario == "images":
            return {**batch, "pixel_values": a.double(), "image_grid_thw": ga, "pixel_values_videos": b.double(),
                    "video_grid_thw": gb}
        return {**batch, "pixel_values_videos": torch.cat([a, b]).double(), "video_grid_thw": torch.cat([ga, gb])}
    frames = {"long": 16, "uneven": 10, "decode": 12, "zero3": 12}[scenario]
    pixels, grid = random_video(cfg, frames=frames, generator=gen)
    ids = torch.tensor([[BOS, 5, VISION_START, VISION_END, 7, 8, 9, 10, 11, 12]])
    return {"input_ids": ids, "labels": ids.clone(), "pixel_values_videos": pixels.double(), "video_grid_thw": grid}


def out_tokens(model) -> int:
    """Video tokens this rank's last forward held (recorded by a hook on the first layer's mixer)."""
    return getattr(model, "_seen_video_tokens", -1)


def record_tokens(model) -> None:
    def hook(module, args, kwargs):
        model._seen_video_tokens = args[0].shape[1]

    model.model.language_model.layers[0].vision_mixer.register_forward_pre_hook(hook, with_kwargs=True)


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def reference(batch: dict) -> tuple[float, torch.Tensor, dict]:
    model = build_model().train()
    out = model(**batch, use_cache=False)
    out.loss.backward()
    return out.loss.item(), out.logits.detach(), grads(model)


def compare_training(scenario: str, cp: ContextParallel) -> dict:
    batch = inputs(scenario)
    loss_ref, logits_ref, grads_ref = reference(batch)
    model = build_model().train()
    record_tokens(model)
    out = model(**cp.shard(batch, model.config), use_cache=False)
    out.loss.backward()
    summed = {}
    for name, g in grads(model).items():
        dist.all_reduce(g, group=cp.group)
        summed[name] = g / cp.size
    missing = sorted(set(grads_ref) ^ set(summed))
    errs = grad_errors(summed, grads_ref)
    worst = max(errs, key=errs.get)
    return {"loss": abs(out.loss.item() - loss_ref) / abs(loss_ref), "logits": rel(out.logits.detach(), logits_ref),
            "grad": errs[worst], "worst_param": worst, "missing": missing, "params": len(grads_ref),
            "local_tokens": out_tokens(model)}


def compare_decode(cp: ContextParallel) -> dict:
    batch = inputs("decode")
    model = build_model().eval()
    with torch.no_grad():
        ref_cache = model.encode_video(pixel_values_videos=batch["pixel_values_videos"],
                                       video_grid_thw=batch["video_grid_thw"], stream_above_frames=None)
        ref = model.generate(input_ids=batch["input_ids"], **{CACHE: ref_cache.fork()}, max_new_tokens=8,
                             do_sample=False, output_logits=True, return_dict_in_generate=True, pad_token_id=0,
                             eos_token_id=None)
        ctx = cp.shard(batch, model.config)["context_parallel"]
        cache = model.encode_video(context_parallel=ctx)
        out = model.generate(input_ids=batch["input_ids"], **{CACHE: cache.fork()}, max_new_tokens=8,
                             do_sample=False, output_logits=True, return_dict_in_generate=True, pad_token_id=0,
                             eos_token_id=None)
    local = cache.video_kv[0][0].shape[2]
    return {"tokens_equal": out.sequences.tolist() == ref.sequences.tolist(),
            "logits": rel(torch.stack(out.logits), torch.stack(ref.logits)), "local_kv_tokens": local,
            "total_kv_tokens": ref_cache.video_kv[0][0].shape[2]}


def compare_zero3(cp: ContextParallel) -> dict:
    import deepspeed
    from deepspeed.utils import safe_get_full_grad

    batch = inputs("zero3")
    loss_ref, logits_ref, grads_ref = reference(batch)
    ds_config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
                 "zero_optimization": {"stage": 3}, "optimizer": {"type": "SGD", "params": {"lr": 0.0}},
                 "zero_allow_untested_optimizer": True}
    model = build_model()  # partitioned by deepspeed.initialize (ZeRO-3)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds_config)
    engine.train()
    out = engine(**cp.shard(batch, model.config), use_cache=False)
    engine.backward(out.loss)
    full = {name: safe_get_full_grad(p).double() for name, p in engine.module.named_parameters() if name in grads_ref}
    errs = grad_errors(full, grads_ref)
    worst = max(errs, key=errs.get)
    return {"loss": abs(out.loss.item() - loss_ref) / abs(loss_ref), "logits": rel(out.logits.detach(), logits_ref),
            "grad": errs[worst], "worst_param": worst, "params": len(errs),
            "missing": sorted(set(grads_ref) - set(errs))}


def main() -> None:
    out_path, scenarios = sys.argv[1], sys.argv[2].split(",")
    launch.init("gloo")
    cp = ContextParallel(dist.get_world_size())
    results = {}
    for scenario in sorted(scenarios, key=lambda s: s == "zero3"):  # DeepSpeed's engine last
        if scenario == "decode":
            results[scenario] = compare_decode(cp)
        elif scenario == "zero3":
            import deepspeed

            deepspeed.init_distributed(dist_backend="gloo", timeout=launch.timeout())  # joins the existing group
            results[scenario] = compare_zero3(cp)
        else:
            results[scenario] = compare_training(scenario, cp)
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, results)
    if dist.get_rank() == 0:
        with open(out_path, "w") as f:
            json.dump({s: [r[s] for r in gathered] for s in scenarios}, f)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        launch.abort(1)
    launch.finish()
