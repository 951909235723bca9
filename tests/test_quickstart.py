"""The quickstart end to end at its smallest size: every step of the recipe runs, then re-running reuses them."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest
from conftest import REPO


def _script():
    spec = importlib.util.spec_from_file_location("quickstart", REPO / "scripts" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_configs_build_the_profiled_architecture():
    """The experiment configs train the `quickstart` flavor that `vamba bench --model quickstart` profiles, at its
    frame size, and the conversion adds that flavor's mixer."""
    import torch

    from vamba.config import compose
    from vamba.efficiency.memory import get_profile
    from vamba.train.trainer import build_model

    base = compose("train", ["experiment=quickstart_base"])
    profile = get_profile("quickstart")
    assert base.model.kind == "qwen2_vl" and base.model.flavor == "quickstart"
    built = build_model(base.model, torch.float32, vocab_size=520).config.to_dict()
    expected = profile.qwen2vl.to_dict()
    for part in ("text_config", "vision_config"):  # the same sizes; the vocabulary is the tokenizer's
        built[part].pop("vocab_size", None), expected[part].pop("vocab_size", None)
        assert {k: v for k, v in built[part].items() if k != "dtype"} == \
            {k: v for k, v in expected[part].items() if k != "dtype"}
    for name in ("quickstart", "quickstart_small"):
        qs = compose(name)
        assert qs.flavor == "quickstart" and qs.data.width == profile.width and qs.data.height == profile.height
    stage1, stage2 = (compose("train", [f"experiment=quickstart_{s}"]) for s in ("stage1", "stage2"))
    assert (stage1.train.name, stage2.train.name) == ("pretrain", "sft")
    assert [s.weight for s in stage1.data.sources] == [1.0, 0.25] and len(stage2.data.sources) == 1


def test_small_quickstart_runs_every_step_and_reuses_them(tmp_path):
    main = _script().main
    assert main(["--small", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    models = {(r["model"], r["frames"]) for r in summary["results"]}
    assert models == {("Qwen2-VL (tiny)", 4), ("Qwen2-VL (tiny)", 8), ("Vamba (tiny)", 4), ("Vamba (tiny)", 8),
                      ("Vamba, converted (no training)", 8), ("Vamba after stage 1", 8)}
    assert all(0 <= r["accuracy"] <= 100 and r["questions"] == 4 for r in summary["results"])
    # Prefill costs where the savings are real: the small flavor timed here, the 7B counted and accounted.
    costs = {(c["flavor"], c["system"], c["frames"]): c for c in summary["prefill"]}
    for system in ("qwen2vl", "vamba", "vamba_stream"):
        for f in (2, 4):  # 149.5 visual tokens per 640x360 frame
            c = costs[("small", system, f)]
            assert c["status"] == "ok" and c["time_s"] > 0 and c["visual_tokens"] == f * 299 // 2
        for f in (16, 64):
            assert costs[("7b", system, f)]["account_total_gb"] > 15 and costs[("7b", system, f)]["time_s"] is None
    assert costs[("7b", "vamba", 64)]["flops_whole"] < costs[("7b", "qwen2vl", 64)]["flops_whole"]
    table = (tmp_path / "summary.md").read_text()
    assert "chance = 25%" in table and "| Vamba (tiny) | 8 |" in table and "| small (s) | 4 | 598 |" in table
    assert "| 7b (GB) | 64 | 9,568 |" in table and "| 7b (TFLOPs) | 16 |" in table
    assert (tmp_path / "summary.png").read_bytes()[:4] == b"\x89PNG"
    for stage in ("qwen2vl", "vamba-stage1", "vamba-stage2"):
        assert (tmp_path / stage / "final" / "model.safetensors").is_file()
    started = time.perf_counter()
    assert main(["--small", "--out", str(tmp_path)]) == 0  # everything reused: no training, no re-answering
    assert time.perf_counter() - started < 60
    _chat_with_the_quickstart_checkpoint(tmp_path)


def _chat_with_the_quickstart_checkpoint(out):
    """`vamba chat` on the quickstart's Vamba (CLI and Python), its multiple-choice prompt = the benchmark's."""
    import contextlib
    import io

    from vamba.chat import ask, load, multiple_choice_prompt
    from vamba.cli import main as cli
    from vamba.evals.benchmarks.synthetic import BENCHMARK

    q = BENCHMARK.load(out / "data")[0]
    assert multiple_choice_prompt(q.question, q.options) == BENCHMARK.prompt(q)
    model_dir = out / "vamba-stage2" / "final"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli(["chat", "--model", str(model_dir), "--video", str(out / "data" / q.video), "--frames", "8",
                    "--choices", ",".join(q.options), "--max-new-tokens", "4", q.question]) == 0
    model, processor = load(model_dir, device="cpu")
    answer = ask(model, processor, out / "data" / q.video, q.question, frames=8, max_new_tokens=4, choices=q.options)
    assert printed.getvalue().strip() == answer
    # Streaming the video 2 frames at a time gives the same greedy answer.
    assert ask(model, processor, out / "data" / q.video, q.question, frames=8, max_new_tokens=4, choices=q.options,
               stream_chunk=2) == answer
    with pytest.raises(ValueError, match="choices"):
        multiple_choice_prompt("?", ["only one"])
