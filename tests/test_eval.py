"""The evaluation harness end to end: tiny models, generated videos, the real CLI, resume after kill -9,
encode-once equivalence, errors recorded per question, torchrun sharding."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_torchrun

from vamba.cli import main
from vamba.evals.results import ResultsWriter, read_results


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A tiny Vamba and the tiny Qwen2-VL it was converted from, with the tiny processor files."""
    from transformers import Qwen2VLForConditionalGeneration

    from vamba import from_qwen2vl
    from vamba.data.processor import VambaProcessor
    from vamba.modeling.tiny import tiny_qwen2vl_config

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("ckpt")
    qwen = Qwen2VLForConditionalGeneration(tiny_qwen2vl_config(vision={"patch_size": 14}))
    vamba = from_qwen2vl(qwen, mixer_config={"d_state": 16, "headdim": 16, "chunk_size": 64})
    out = {"qwen2_vl": root / "qwen", "vamba": root / "vamba"}
    qwen.save_pretrained(out["qwen2_vl"])
    vamba.save_pretrained(out["vamba"])
    for d in out.values():
        VambaProcessor.tiny(patch_size=14).save_pretrained(d)
    return out


def _eval(checkpoint: Path, data: Path, out: Path, *extra: str, model_type: str = "vamba") -> dict:
    assert main(["eval", "benchmark=synthetic", f"model.path={checkpoint}", f"model.type={model_type}",
                 f"data_dir={data}", "frames=8", f"output_dir={out}", "max_new_tokens=3", *extra]) == 0
    return json.loads((out / "summary.json").read_text())


def _by_qid(out: Path) -> dict[str, dict]:
    return {r["qid"]: r for p in out.glob("results*.jsonl") for r in read_results(p)}


def test_cli_end_to_end_writes_results_and_report(checkpoints, synthetic_data, tmp_path):
    summary = _eval(checkpoints["vamba"], synthetic_data, tmp_path)
    rows = read_results(tmp_path / "results.jsonl")
    assert len(rows) == 8 == summary["overall"]["total"]
    assert {"qid", "prompt", "response", "letter", "correct", "time_s"} <= set(rows[0])
    assert "<|vision_start|><|vision_end|>" in rows[0]["prompt"]
    assert 0 <= summary["headline"] <= 100 and summary["meta"]["frames"] == "8"
    report = (tmp_path / "report.md").read_text()
    assert "synthetic" in report and "frames=8" in report and "| overall |" in report
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_encode_once_gives_the_same_answers_as_encoding_per_question(checkpoints, synthetic_data, tmp_path):
    _eval(checkpoints["vamba"], synthetic_data, tmp_path / "once")
    _eval(checkpoints["vamba"], synthetic_data, tmp_path / "each", "encode_once=false")
    once, each = _by_qid(tmp_path / "once"), _by_qid(tmp_path / "each")
    assert once.keys() == each.keys()
    assert all(once[q]["response"] == each[q]["response"] for q in once)


def test_killed_run_resumes_to_the_same_report(checkpoints, synthetic_data, tmp_path):
    full = _eval(checkpoints["vamba"], synthetic_data, tmp_path / "full")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "vamba.cli", "eval", "benchmark=synthetic", f"model.path={checkpoints['vamba']}",
           f"data_dir={synthetic_data}", "frames=8", f"output_dir={out}", "max_new_tokens=3"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not results.exists() or results.read_bytes().count(b"\n") < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = read_results(results)
    assert 3 <= len(done) < 8 or len(done) == 8  # killed mid-run (or, on a very fast machine, just after)
    with open(results, "ab") as f:  # and a torn line, as if killed in the middle of a write
        f.write(b'{"qid": "syn_eval_')
    resumed = _eval(checkpoints["vamba"], synthetic_data, out)
    rows = read_results(results)
    assert len(rows) == 8 and len({r["qid"] for r in rows}) == 8
    for key in ("headline", "overall", "groups"):
        assert resumed[key] == full[key]


def test_missing_and_broken_videos_are_errors_not_crashes(checkpoints, synthetic_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    videos = sorted((data / "videos").glob("syn_eval_*.mp4"))
    videos[0].unlink()
    videos[1].write_bytes(b"not a video")
    summary = _eval(checkpoints["vamba"], data, tmp_path / "out")
    assert summary["errors"] == 4 and summary["overall"]["total"] == 8
    errors = [r for r in read_results(tmp_path / "out" / "results.jsonl") if r["error"]]
    assert len(errors) == 4 and all(not r["correct"] for r in errors)
    assert videos[0].name in (tmp_path / "out" / "report.md").read_text()


def test_qwen2vl_baseline_and_token_reduction_run(checkpoints, synthetic_data, tmp_path):
    qwen = _eval(checkpoints["qwen2_vl"], synthetic_data, tmp_path / "qwen", model_type="qwen2_vl")
    assert qwen["overall"]["total"] == 8 and qwen["meta"]["model_type"] == "qwen2_vl"
    rows = read_results(tmp_path / "qwen" / "results.jsonl")
    assert "<|video_pad|>" in rows[0]["prompt"] or rows[0]["prompt"].count("<|vision_start|>") == 1
    tr = _eval(checkpoints["vamba"], synthetic_data, tmp_path / "tr", "video_token_keep=0.5")
    assert tr["meta"]["video_token_keep"] == 0.5 and tr["overall"]["total"] == 8


def test_torchrun_shards_videos_and_merges_one_report(checkpoints, synthetic_data, tmp_path):
    single = _eval(checkpoints["vamba"], synthetic_data, tmp_path / "single")
    out = tmp_path / "dist"
    run_torchrun(["-m", "vamba.cli", "eval", "benchmark=synthetic", f"model.path={checkpoints['vamba']}",
                  f"data_dir={synthetic_data}", "frames=8", f"output_dir={out}", "max_new_tokens=3"])
    assert sorted(p.name for p in out.glob("results*.jsonl")) == ["results.rank0.jsonl", "results.rank1.jsonl"]
    assert all(read_results(p) for p in out.glob("results*.jsonl"))  # both ranks answered questions
    merged = json.loads((out / "summary.json").read_text())
    assert merged["overall"] == single["overall"] and merged["groups"] == single["groups"]


def test_results_writer_repairs_a_torn_line(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsWriter(path) as w:
        w.write({"qid": "a"})
    with open(path, "ab") as f:
        f.write(b'{"qid": "b", "trunc')
    assert [r["qid"] for r in read_results(path)] == ["a"]
    with ResultsWriter(path) as w:
        w.write({"qid": "c"})
    assert [r["qid"] for r in read_results(path)] == ["a", "c"]
    path.write_text('{"qid": "a"}\nnot json\n{"qid": "c"}\n')
    with pytest.raises(ValueError, match="r.jsonl:2"):
        read_results(path)


def test_eval_help_lists_options_and_benchmarks(capsys):
    assert main(["eval", "--help"]) == 0
    out = capsys.readouterr().out
    assert "model.path=" in out and "frames=None" in out and "lvbench" in out
    assert "protocol='official'  (official|release)" in out


def test_lmms_eval_adapter_answers_simple_requests(checkpoints, synthetic_data):
    """The adapter's request handling with lmms-eval-shaped Instances (6-field args of the simple path)."""
    from types import SimpleNamespace

    from vamba.evals.lmms_eval_adapter import Vamba

    model = Vamba(pretrained=str(checkpoints["vamba"]), max_num_frames=8, device="cpu")
    video = str(next((synthetic_data / "videos").glob("syn_eval_*.mp4")))
    model.task_dict = {"synthetic": {"test": {0: {"video": video}, 1: {"video": video}}}}
    doc_to_visual = lambda doc: [doc["video"]]  # noqa: E731
    requests = [
        SimpleNamespace(args=("Which colour? Answer with the letter.", {"max_new_tokens": 3, "until": ["\n"]},
                              doc_to_visual, doc_id, "synthetic", "test"))
        for doc_id in (0, 1)
    ]
    out = model.generate_until(requests)
    assert len(out) == 2 and all(isinstance(o, str) for o in out) and out[0] == out[1]
    with pytest.raises(NotImplementedError):
        model.loglikelihood(requests)


def test_lmms_eval_registration():
    pytest.importorskip("lmms_eval", reason="optional extra `lmms` not installed")
    from vamba.evals.lmms_eval_adapter import manifests

    assert manifests().model_id == "vamba"


def test_bounded_questions_encode_their_own_clip_windows(checkpoints, synthetic_data, tmp_path, monkeypatch):
    """MVBench-style start/end: each window is decoded and encoded once, a window past the end is that question's
    error only, and an unbounded question still sees the whole video."""
    import shutil

    from vamba.evals import runner

    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    video = sorted((data / "videos").glob("syn_eval_*.mp4"))[0]  # 8 frames at 4 fps: 2 s
    task = data / "json" / "action_sequence.json"
    task.parent.mkdir()
    rows = [{"video": video.name, "question": f"q{i}?", "candidates": ["a", "b", "c", "d"], "answer": "a", **b}
            for i, b in enumerate([{"start": 0.0, "end": 1.0}, {"start": 0.0, "end": 1.0}, {"start": 1.0, "end": 2.0},
                                   {}, {"start": 5.0, "end": 6.0}])]
    task.write_text(json.dumps(rows))
    (data / "video" / "star" / "Charades_v1_480").mkdir(parents=True)  # the task's folder (official evaluation)
    shutil.copy(video, data / "video" / "star" / "Charades_v1_480" / video.name)
    loads = []
    original = runner.VideoAnswerer.load_frames

    def spy(self, path, start=None, end=None, folder_fps=None):
        loads.append((start, end, folder_fps))
        return original(self, path, start, end, folder_fps)

    # Episodic Reasoning reads a folder of 3-fps frame images (00001.jpg, ...).
    from PIL import Image

    from vamba.data.video import load_video

    frames = data / "video" / "tvqa" / "frames_fps3_hq" / "clip1"
    frames.mkdir(parents=True)
    for i, rgb in enumerate(load_video(video, num_frames=8).frames, start=1):
        Image.fromarray(rgb).save(frames / f"{i:05d}.jpg")
    (data / "json" / "episodic_reasoning.json").write_text(json.dumps(
        [{"video": "clip1", "question": "q?", "candidates": ["a", "b", "c", "d"], "answer": "b"}]))

    monkeypatch.setattr(runner.VideoAnswerer, "load_frames", spy)
    assert main(["eval", "benchmark=mvbench", f"model.path={checkpoints['vamba']}", f"data_dir={data}", "frames=4",
                 f"output_dir={tmp_path / 'out'}", "max_new_tokens=2"]) == 0
    windows = [(0.0, 1.0, None), (1.0, 2.0, None), (None, None, None), (5.0, 6.0, None), (None, None, 3)]
    assert sorted(loads, key=str) == sorted(windows, key=str)
    records = read_results(tmp_path / "out" / "results.jsonl")
    errors = [r for r in records if r["error"]]
    assert len(records) == 6 and len(errors) == 1 and "after the video" in errors[0]["error"]
