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
    """The experiment configs train exactly what `vamba bench --model quickstart` profiles, at its frame size."""
    from omegaconf import OmegaConf

    from vamba.config import compose
    from vamba.efficiency.configs import QUICKSTART_FRAME, QUICKSTART_MIXER, QUICKSTART_TEXT, QUICKSTART_VISION

    base = compose("train", ["experiment=quickstart_base"])
    tiny = OmegaConf.to_container(base.model.tiny)
    assert base.model.kind == "qwen2_vl" and tiny.pop("vision") == QUICKSTART_VISION
    assert tiny == {k: v for k, v in QUICKSTART_TEXT.items() if k != "vocab_size"}  # vocab: the tokenizer's
    for name in ("quickstart", "quickstart_small"):
        qs = compose(name)
        assert OmegaConf.to_container(qs.convert.mixer_config) == QUICKSTART_MIXER
        assert qs.data.width == qs.data.height == QUICKSTART_FRAME
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
    # Prefill cost of both models at every benchmarked frame count, measured on the quickstart's architecture.
    costs = {(c["model"], c["frames"]): c for c in summary["prefill"]}
    assert set(costs) == {(m, f) for m in ("Qwen2-VL (tiny)", "Vamba (tiny)") for f in (4, 8, 16)}
    assert all(c["status"] == "ok" and c["prefill_ms"] > 0 and c["visual_tokens"] == c["frames"] // 2
               for c in costs.values())
    table = (tmp_path / "summary.md").read_text()
    assert "chance = 25%" in table and "| Vamba (tiny) | 16 | 8 | – |" in table
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
