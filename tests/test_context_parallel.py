"""Context parallel (vamba.parallel): one sample's video split over 2 or 4 gloo processes is exact.

Each torchrun run (tests/cp_worker.py) compares, in float64, the group's loss, logits and every parameter gradient
(summed over the group and divided by its size, as DDP/ZeRO averaging does) with the single-process run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, run_torchrun

from vamba.modeling.video_slice import attention_with_lse, merge_partials, plan_slices
from vamba.parallel import check_context_parallel

TOL = 1e-6


# One torchrun launch per group size runs all its scenarios (each rank's start-up is most of a scenario's cost).
SCENARIOS = {2: ("long", "uneven", "packed", "images", "zero3"), 4: ("packed", "decode")}


@pytest.fixture(scope="module")
def cp_runs(tmp_path_factory):
    """`cp_runs(world)[scenario]`: the per-rank results of tests/cp_worker.py, launched once per group size."""
    done: dict[int, dict] = {}

    def get(world: int) -> dict:
        if world not in done:
            out = tmp_path_factory.mktemp(f"cp{world}") / "results.json"
            run_torchrun([str(REPO / "tests" / "cp_worker.py"), str(out), ",".join(SCENARIOS[world])], nproc=world,
                         timeout=600)
            done[world] = json.loads(out.read_text())
        return done[world]

    return get


@pytest.mark.parametrize("scenario,world", [("long", 2), ("uneven", 2), ("packed", 2), ("images", 2), ("zero3", 2),
                                            ("packed", 4)])
@pytest.mark.multiprocess
def test_training_step_is_exact(cp_runs, scenario, world):
    results = cp_runs(world)[scenario]
    assert len(results) == world
    for r in results:
        assert r["loss"] <= TOL and r["logits"] <= TOL, r
        assert r["grad"] <= TOL, r  # the worst parameter
        assert not r["missing"] and r["params"] > 60, r
    if "local_tokens" in results[0]:
        tokens = [r["local_tokens"] for r in results]
        assert len(set(tokens)) > 1 if scenario == "uneven" else max(tokens) < sum(tokens), tokens  # sliced


@pytest.mark.multiprocess
@pytest.mark.parametrize("world", [4])
def test_prefill_and_greedy_decoding_are_exact(cp_runs, world):
    results = cp_runs(world)["decode"]
    assert len(results) == world
    for r in results:
        assert r["tokens_equal"] and r["logits"] <= TOL, r
        assert r["local_kv_tokens"] < r["total_kv_tokens"]  # each rank keeps only its slice's keys/values
    assert sum(r["local_kv_tokens"] for r in results) == results[0]["total_kv_tokens"]


@pytest.mark.multiprocess
def test_training_run_with_w2_gives_the_w1_losses(synthetic_data, tmp_path):
    """`vamba train` on 2 ranks with train.context_parallel=2 (ZeRO-3, gradient checkpointing), killed after step 2
    and resumed, logs the losses of 1 rank with W=1."""
    from test_train import _losses, _overrides
    from transformers import Qwen2VLForConditionalGeneration

    from vamba import from_qwen2vl
    from vamba.data.processor import VambaProcessor
    from vamba.modeling.tiny import tiny_qwen2vl_config

    torch.manual_seed(0)
    init = tmp_path / "init"
    qwen = Qwen2VLForConditionalGeneration(tiny_qwen2vl_config(vision={"patch_size": 14}))
    from_qwen2vl(qwen, mixer_config={"d_state": 16, "headdim": 16, "chunk_size": 4}).save_pretrained(init)
    VambaProcessor.tiny(patch_size=14).save_pretrained(init)
    common = [f"model.path={init}", "model.flavor=null", "model.processor=null", "train.max_steps=4", "save_steps=100",
              "train.learning_rate=3e-3", "data.sources.1.weight=0", "train.gradient_checkpointing=true"]
    one, two = tmp_path / "w1", tmp_path / "w2"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    single = subprocess.run([sys.executable, "-m", "vamba", "train", *_overrides(synthetic_data, one, *common),
                             "train.per_device_batch_size=1", "train.global_batch_size=2"],
                            capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert single.returncode == 0, single.stderr[-4000:]
    cp_args = ["-m", "vamba", "train", *_overrides(synthetic_data, two, *common), "train.per_device_batch_size=1",
               "train.global_batch_size=2", "deepspeed=zero3", "train.context_parallel=2"]
    killed = run_torchrun([*cp_args, "save_steps=2", "debug_kill_at_step=2"], nproc=2, check=False)
    assert killed.returncode != 0 and (two / "checkpoint-2").is_dir() and not (two / "final").exists()
    run_torchrun([*cp_args, "save_steps=2"], nproc=2)  # resume=auto: from checkpoint-2, same data position
    a, b = _losses(one), _losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5), (step, a, b)


# -- planning and start-up checks (no processes) -------------------------------------------------------------------
def test_plan_cuts_contiguous_slices_at_temporal_patches():
    items = [("video", 0, (3, 4, 4), 0), ("image", 0, (1, 8, 8), 1), ("video", 1, (5, 4, 4), 1)]
    plan = plan_slices(items, merge=2, world=3)
    assert plan.ranges[0][0] == 0 and plan.ranges[-1][1] == 3 * 4 + 16 + 5 * 4
    assert all(a[1] == b[0] for a, b in zip(plan.ranges, plan.ranges[1:]))  # contiguous
    units = [(p.item, t) for pieces in plan.pieces for p in pieces for t in range(p.t0, p.t1)]
    assert units == [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0), (2, 1), (2, 2), (2, 3), (2, 4)]  # every patch once
    sizes = [b - a for a, b in plan.ranges]
    assert max(sizes) - min(sizes) <= 16  # balanced to within one temporal patch
    rows = plan.pixel_rows(1)
    assert rows[0][0] in ("video", "image") and all(b > a for _, a, b in rows)


def test_a_video_shorter_than_the_group_is_refused():
    with pytest.raises(ValueError, match="at least 4 temporal patches"):
        plan_slices([("video", 0, (3, 4, 4), 0)], merge=2, world=4)


def test_start_up_checks():
    with pytest.raises(ValueError, match="must divide the world size 4"):
        check_context_parallel(3, 4, "mamba2", [], 2)
    with pytest.raises(ValueError, match="mamba1"):
        check_context_parallel(2, 4, "mamba1", [], 2)
    with pytest.raises(ValueError, match="at least 8"):
        check_context_parallel(4, 4, "mamba2", [16, 6], 2)
    check_context_parallel(2, 4, "none", [16], 2)


def test_partial_attention_merges_exactly():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4, 6, 8, dtype=torch.float64), torch.randn(1, 2, 20, 8, dtype=torch.float64),
               torch.randn(1, 2, 20, 8, dtype=torch.float64))
    visible = torch.rand(1, 6, 20) > 0.3
    visible[0, 2] = False  # a text token that sees no video: output 0, lse -inf
    whole, lse = attention_with_lse(q, k, v, visible, 0.3)
    parts = [attention_with_lse(q, k[:, :, s], v[:, :, s], visible[..., s], 0.3) for s in (slice(0, 7), slice(7, 20))]
    merged, lse2 = merge_partials([p[0] for p in parts], [p[1] for p in parts])
    mask = visible | ~visible.any(-1, keepdim=True)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], scale=0.3,
                                                           enable_gqa=True) * visible.any(-1)[:, None, :, None]
    assert torch.allclose(whole, ref, atol=1e-12) and torch.allclose(merged, ref, atol=1e-12)
    assert torch.isinf(lse2[0, :, 2]).all() and torch.allclose(lse, lse2)


@pytest.mark.multiprocess
def test_vamba_eval_spreads_each_video_over_a_group(tmp_path, synthetic_data):
    """`vamba eval context_parallel=2` on 2 ranks answers exactly as one process does."""
    from test_eval import _by_qid
    from transformers import Qwen2VLForConditionalGeneration

    from vamba import from_qwen2vl
    from vamba.data.processor import VambaProcessor
    from vamba.modeling.tiny import tiny_qwen2vl_config

    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt"
    qwen = Qwen2VLForConditionalGeneration(tiny_qwen2vl_config(vision={"patch_size": 14}))
    from_qwen2vl(qwen, mixer_config={"d_state": 16, "headdim": 16, "chunk_size": 4}).save_pretrained(ckpt)
    VambaProcessor.tiny(patch_size=14).save_pretrained(ckpt)
    args = ["-m", "vamba.cli", "eval", "benchmark=synthetic", f"model.path={ckpt}", f"data_dir={synthetic_data}",
            "frames.count=8", "max_new_tokens=3", "model.dtype=float64"]
    run_torchrun([*args, f"output_dir={tmp_path / 'one'}"], nproc=1)
    run_torchrun([*args, f"output_dir={tmp_path / 'cp'}", "context_parallel=2"], nproc=2)
    one, cp = _by_qid(tmp_path / "one"), _by_qid(tmp_path / "cp")
    assert sorted(one) == sorted(cp) and len(one) == 8
    assert all(one[q]["response"] == cp[q]["response"] for q in one)
    assert not list((tmp_path / "cp").glob(".results*"))  # the group's second rank wrote nothing that stays


def test_7b_account_divides_the_video_part_by_w(tmp_path, capsys):
    from vamba.cli import main
    from vamba.efficiency.context_parallel import max_frames, train_account
    from vamba.efficiency.memory import get_profile

    p = get_profile("7b")
    one, eight = train_account(p, 1024, 1), train_account(p, 1024, 8)
    assert one.states_gb == eight.states_gb and one.comm_gb == 0 < eight.comm_gb
    assert eight.local_tokens == -(-one.local_tokens // 8)
    text_only = train_account(p, 2, 1)  # one temporal patch: what does not scale with the video
    video = lambda a: a.checkpoints_gb + a.recompute_gb - text_only.checkpoints_gb - text_only.recompute_gb
    assert video(eight) == pytest.approx(video(one) / 8, rel=0.02)
    assert max_frames(p, 8, train_vision=False) >= 4096 > max_frames(p, 1, train_vision=False)
    assert main(["bench", "--context-parallel", "--out", str(tmp_path)]) == 0
    assert "frames that fit" in capsys.readouterr().out and (tmp_path / "context_parallel_account.json").is_file()
