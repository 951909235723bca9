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
                 f"data_dir={data}", "frames.count=8", f"output_dir={out}", "max_new_tokens=3", *extra]) == 0
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


def test_a_frame_mode_on_the_command_line_replaces_the_protocols_sampler(checkpoints, synthetic_data, tmp_path,
                                                                         monkeypatch):
    from vamba.evals import runner

    seen = []
    original = runner.VideoAnswerer.load_frames
    monkeypatch.setattr(runner.VideoAnswerer, "load_frames",
                        lambda self, path, q: seen.append(original(self, path, q)) or seen[-1])
    summary = _eval(checkpoints["vamba"], synthetic_data, tmp_path / "fps", "frames.mode=fps", "frames.fps=2",
                    "max_videos=1")
    # 8-frame videos at 4 fps (2 s): 2 fps gives 4 frames, segment middles (the protocol's would be all 8).
    assert [v.indices.tolist() for v in seen] == [[1, 3, 5, 7]]
    assert (summary["meta"]["frames"], summary["meta"]["fps"]) == ("fps", 2.0)
    assert summary["meta"]["frame_overrides"] == {"mode": "fps", "count": 8, "fps": 2.0}
    with pytest.raises(Exception, match="random"):  # an unknown mode fails when the config is composed
        _eval(checkpoints["vamba"], synthetic_data, tmp_path / "bad", "frames.mode=random")


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
           f"data_dir={synthetic_data}", "frames.count=8", f"output_dir={out}", "max_new_tokens=3"]
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


@pytest.mark.multiprocess
def test_torchrun_shards_videos_and_merges_one_report(checkpoints, synthetic_data, tmp_path):
    single = _eval(checkpoints["vamba"], synthetic_data, tmp_path / "single")
    out = tmp_path / "dist"
    run_torchrun(["-m", "vamba.cli", "eval", "benchmark=synthetic", f"model.path={checkpoints['vamba']}",
                  f"data_dir={synthetic_data}", "frames.count=8", f"output_dir={out}", "max_new_tokens=3"])
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
    assert "model.path=" in out and "frames.count=None" in out and "lvbench" in out
    assert "frames.mode=None  (uniform|linspace|fps|auto)" in out and "sampler" not in out  # set in code only
    assert "protocol='official'  (official|release)" in out


def test_lmms_eval_adapter_answers_simple_requests(checkpoints, synthetic_data):
    """The adapter's request handling with lmms-eval-shaped Instances (6-field args of the simple path): videos (a
    path or lmms-eval's {"url": path}), images (PIL, as lmms-eval's image tasks pass them), a kind it cannot read.
    The lmms-eval lane (scripts/test_lmms.sh) runs lmms-eval itself."""
    from types import SimpleNamespace

    from PIL import Image

    from vamba.evals.lmms_eval_adapter import Vamba

    model = Vamba(pretrained=str(checkpoints["vamba"]), max_num_frames=8, device="cpu", max_pixels=3136)
    assert (model.device, model.rank, model.world_size) == (torch.device("cpu"), 0, 1)
    video = str(next((synthetic_data / "videos").glob("syn_eval_*.mp4")))
    image = Image.open(next((synthetic_data / "images").glob("*"))).convert("RGB")
    docs = [{"v": video}, {"v": {"url": video}}, {"v": image}, {"v": {"array": [0.0], "sampling_rate": 16000}}]
    model.task_dict = {"synthetic": {"test": dict(enumerate(docs))}}
    requests = [
        SimpleNamespace(args=("Which colour? Answer with the letter.", {"max_new_tokens": 3, "until": ["\n"]},
                              lambda doc: [doc["v"]], doc_id, "synthetic", "test"))
        for doc_id in range(len(docs))
    ]
    out = model.generate_until(requests[:3])
    assert len(out) == 3 and all(isinstance(o, str) for o in out) and out[0] == out[1]
    with pytest.raises(ValueError, match=r"task 'synthetic' passes a dict with keys \['array', 'sampling_rate'\]"):
        model.generate_until(requests[3:])
    with pytest.raises(NotImplementedError):
        model.loglikelihood(requests)
    # frames: max_num_frames over 64 segment middles, or over the protocol's frames of the task's benchmark
    from vamba.data.frames import Sampling

    spec = model.frame_spec("synthetic", video)
    assert (spec.mode, spec.count, spec.longest_edge, spec.max_pixels) == (None, 8, None, 3136)
    model.protocol = "release"
    spec = model.frame_spec("videomme_w_subtitle", video)  # Video-MME's release settings: the release's sampler
    assert (spec.mode, spec.count, spec.longest_edge, spec.shortest_edge) == (Sampling.linspace, 8, 480, 256)
    with pytest.raises(ValueError, match="task 'mmmu_val': protocol=release needs a task named after a benchmark"):
        model.frame_spec("mmmu_val", video)
    # one inference path: chat, asked the same thing about the same frames, gives the same reply
    from vamba.chat import ask
    from vamba.data.frames import FrameSpec

    assert ask(model.model, model.processor, video, "Which colour? Answer with the letter.",
               frames=FrameSpec(count=8, max_pixels=3136), max_new_tokens=3).split("\n")[0] == out[0].strip()


def test_lmms_eval_adapter_refuses_unknown_arguments_and_binds_each_rank_its_gpu(monkeypatch):
    """lmms-eval's own models refuse unknown model_args (llava_vid's `max_frames_num` must not pass silently) and,
    under several processes, put each on `cuda:{LOCAL_RANK}`."""
    from vamba.evals.lmms_eval_adapter import Vamba

    with pytest.raises(TypeError, match="unknown model_args max_frames_num; known: pretrained, max_num_frames"):
        Vamba(pretrained="unused", max_frames_num=8)
    with pytest.raises(ValueError, match="unknown protocol 'paper'"):
        Vamba(pretrained="unused", protocol="paper")
    with pytest.raises(ValueError, match="dtype='bf16'; expected auto, bfloat16"):
        Vamba(pretrained="unused", dtype="bf16")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert Vamba.bind_device("cuda") == torch.device("cuda", 1)
    assert Vamba.bind_device("cpu") == torch.device("cpu")


def test_encode_once_greedy_equals_generate_on_the_whole_prompt(checkpoints, synthetic_data):
    """`inference.answer` on a cached encoding (the fast greedy loop) gives the tokens of `generate` on the messages
    processed whole (the video prefilled with the prompt)."""
    from vamba.chat import load
    from vamba.data.frames import FrameSpec
    from vamba.data.video import load_video
    from vamba.evals.inference import answer, encode

    model, processor = load(checkpoints["vamba"], processor="tiny")
    video = next((synthetic_data / "videos").glob("syn_eval_*.mp4"))
    frames = load_video(video, FrameSpec(count=8).fill(min_pixels=784, max_pixels=3136)).frames
    messages = [{"role": "user", "content": [{"type": "video", "video": frames}, {"type": "text", "text": "Hi?"}]}]
    gen = {"max_new_tokens": 6, "do_sample": False}
    cached = answer(model, processor, messages, encode(model, processor, frames), gen, prefix="A")
    whole = answer(model, processor, messages, None, gen, prefix="A")
    assert cached == whole and cached[0].endswith("<|im_start|>assistant\nA")


def test_mvbench_bounds_only_for_official_bounded_tasks(checkpoints, synthetic_data, tmp_path, monkeypatch):
    """MVBench: start/end apply to the five tasks whose official loader uses them (each window decoded once), are
    ignored elsewhere; a bounded record without bounds and a window past the end are those questions' errors only;
    Episodic Reasoning reads its 1-based frame folder."""
    import shutil

    from PIL import Image

    from vamba.data.frames import FrameSpec
    from vamba.data.video import load_video
    from vamba.evals import runner
    from vamba.evals.benchmarks.mvbench import notebook_indices

    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    video = sorted((data / "videos").glob("syn_eval_*.mp4"))[0]  # 8 frames at 4 fps: 2 s
    (data / "json").mkdir()
    bounds = [{"start": 0.0, "end": 1.0}, {"start": 0.0, "end": 1.0}, {"start": 1.0, "end": 2.0}, {},
              {"start": 5.0, "end": 6.0}]
    rows = [{"video": video.name, "question": f"q{i}?", "candidates": ["a", "b", "c", "d"], "answer": "a", **b}
            for i, b in enumerate(bounds)]
    (data / "json" / "action_sequence.json").write_text(json.dumps(rows))
    (data / "json" / "action_antonym.json").write_text(json.dumps([{**rows[2], "candidates": ["a", "b"]}]))
    for folder in ("star/Charades_v1_480", "ssv2_video"):
        (data / "video" / folder).mkdir(parents=True)
        shutil.copy(video, data / "video" / folder / video.name)
    frames = data / "video" / "tvqa" / "frames_fps3_hq" / "clip1"
    frames.mkdir(parents=True)
    for i, rgb in enumerate(load_video(video, FrameSpec(count=8), resize=False).frames, start=1):
        Image.fromarray(rgb).save(frames / f"{i:05d}.png")
    (data / "json" / "episodic_reasoning.json").write_text(json.dumps(
        [{"video": "clip1", "question": "q?", "candidates": ["a", "b", "c", "d"], "answer": "b", "start": 0.5,
          "end": 2.0}]))
    loads = []
    original = runner.VideoAnswerer.load_frames

    def spy(self, path, q):
        out = original(self, path, q)
        loads.append((q.qid, out.indices.tolist()))
        return out

    monkeypatch.setattr(runner.VideoAnswerer, "load_frames", spy)
    assert main(["eval", "benchmark=mvbench", f"model.path={checkpoints['vamba']}", f"data_dir={data}",
                 "frames.count=4", f"output_dir={tmp_path / 'out'}", "max_new_tokens=2", "frames.longest_edge=0"]) == 0
    got = dict(loads)
    assert sorted(got) == ["action_antonym_0", "action_sequence_0", "action_sequence_2", "episodic_reasoning_0"]
    assert got["action_sequence_0"] == notebook_indices((0.0, 1.0), 4.0, 7, 0, 4).tolist()
    assert got["action_antonym_0"] == notebook_indices(None, 4.0, 7, 0, 4).tolist()  # bounds ignored there
    assert got["episodic_reasoning_0"] == (notebook_indices((0.5, 2.0), 3.0, 8, 1, 4) - 1).tolist()
    records = {r["qid"]: r for r in read_results(tmp_path / "out" / "results.jsonl")}
    assert len(records) == 7 and sorted(q for q, r in records.items() if r["error"]) == ["action_sequence_3",
                                                                                   "action_sequence_4"]
    assert records["action_sequence_3"]["error"].endswith("action_sequence.json record 3: missing field(s) start, end")


def _videomme_data(root: Path, synthetic_data: Path) -> Path:
    """Two Video-MME-format questions (invented) on a generated video, with a real .srt for the first."""
    import shutil

    video = sorted((synthetic_data / "videos").glob("syn_eval_*.mp4"))[0]  # 8 frames at 4 fps
    (root / "data").mkdir(parents=True)
    (root / "subtitle").mkdir()
    for vid in ("vidA", "vidB"):
        shutil.copy(video, root / "data" / f"{vid}.mp4")
    (root / "subtitle" / "vidA.srt").write_text("1\n00:00:00,100 --> 00:00:01,000\n<font color=\"white\">first "
                                                 "words</font>\n\n2\n00:00:01,000 --> 00:00:02,000\nsecond\nline\n")
    (root / "subtitle" / "vidB.srt").write_bytes(b"\xff\x00 garbage")
    rows = [{"video_id": str(k), "duration": "short", "domain": "Knowledge", "sub_category": "Astronomy",
             "url": "", "videoID": vid, "question_id": f"{k}-1", "task_type": "Counting Problem",
             "question": "How many shapes are shown?", "options": ["A. 1.", "B. 2.", "C. 3.", "D. 4."], "answer": "B"}
            for k, vid in enumerate(("vidA", "vidB"))]
    rows.append({**rows[0], "question_id": "0-2", "answer": None})
    (root / "ann.json").write_text(json.dumps(rows))
    return root


def test_videomme_subtitles_at_the_sampled_frames(checkpoints, synthetic_data, tmp_path):
    data = _videomme_data(tmp_path / "data", synthetic_data)
    out = tmp_path / "out"
    assert main(["eval", "benchmark=videomme", f"model.path={checkpoints['vamba']}", f"data_dir={data}",
                 "annotation=ann.json", "frames.count=4", "subtitles=true", f"output_dir={out}",
                 "max_new_tokens=2"]) == 0
    rows = {r["qid"]: r for r in read_results(out / "results.jsonl")}
    # official extractor indices for 8 frames, N=4: s = 7/4 -> [1, 2, 4, 6], at 4 fps t = 0.25, 0.5, 1.0, 1.5 s:
    # cue 1 twice, none on the 1.0 s boundary, cue 2 (its two lines joined by a space)
    block = "This video's subtitles are listed below:\nfirst words\nfirst words\nsecond line\nSelect the best answer"
    assert block in rows["0-1"]["prompt"] and rows["0-1"]["subtitles"] == "used"
    assert "subtitles are listed" not in rows["1-1"]["prompt"] and rows["1-1"]["subtitles"] == "unparsable"
    assert "ann.json row 2: missing field(s) answer" in rows["0-2"]["error"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["subtitle_files"] == {"used": 1, "unparsable": 1}
    assert summary["meta"]["subtitles"] is True and summary["meta"]["overridden"] == ["frames", "max_new_tokens",
                                                                                      "subtitles"]
    report = (out / "report.md").read_text()
    assert "unparsable 1" in report and "subtitles=True (set)" in report and "sampler='videomme'" in report


def test_release_protocol_prompt_and_deprecated_scoring(checkpoints, synthetic_data, tmp_path):
    data = _videomme_data(tmp_path / "data", synthetic_data)
    common = ["benchmark=videomme", f"model.path={checkpoints['vamba']}", f"data_dir={data}", "annotation=ann.json",
              "frames.count=4", "max_new_tokens=2"]
    assert main(["eval", *common, "protocol=release", f"output_dir={tmp_path / 'rel'}"]) == 0
    prompt = next(r for r in read_results(tmp_path / "rel" / "results.jsonl") if r["qid"] == "0-1")["prompt"]
    assert prompt == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                      "<|vision_start|><|vision_end|>Select the best answer to the following multiple-choice question "
                      "based on the video.\nRespond with only the letter (A, B, C, or D) of the correct option.\n"
                      "How many shapes are shown?\nA. 1. B. 2. C. 3. D. 4.<|im_end|>\n<|im_start|>assistant\n")
    summary = json.loads((tmp_path / "rel" / "summary.json").read_text())
    assert summary["protocol"] == "release" and "Departs from the official evaluation" in summary["rule"]
    assert (summary["meta"]["longest_edge"], summary["meta"]["max_new_tokens"]) == (480, 2)
    with pytest.warns(DeprecationWarning, match="scoring"):
        assert main(["eval", *common, "scoring=release", f"output_dir={tmp_path / 'old'}"]) == 0
    assert json.loads((tmp_path / "old" / "summary.json").read_text())["protocol"] == "release"
    # resuming into a directory of another run's settings is refused, naming the difference
    with pytest.raises(ValueError, match="protocol: 'release'"):
        main(["eval", *common, "protocol=official", f"output_dir={tmp_path / 'rel'}"])


def test_longvideobench_interleaved_subtitles_and_missing_fields(checkpoints, synthetic_data, tmp_path):
    """Official LongVideoBench: the loader's frame stride, the subtitle cues kept at those frames placed before the
    question, and a record without the `duration` the protocol needs as that question's error."""
    import shutil

    data = tmp_path / "data"
    (data / "videos").mkdir(parents=True)
    (data / "subtitles").mkdir()
    shutil.copy(sorted((synthetic_data / "videos").glob("syn_eval_*.mp4"))[0], data / "videos" / "v1.mp4")  # 2 s
    (data / "subtitles" / "v1_en.json").write_text(json.dumps(
        [{"timestamp": [0.5, 1.5], "text": "kept line"},
         {"start": "0:00:01.6", "end": "0:00:01.9", "line": "dropped"}]))
    row = {"id": "v1_0", "video_id": "v1", "video_path": "v1.mp4", "subtitle_path": "v1_en.json", "question": "What?",
           "candidates": ["a", "b", "c", "d", "e"], "correct_choice": 1, "duration": 2.0, "duration_group": 15,
           "question_category": "S2E", "starting_timestamp_for_subtitles": 0}
    nodur = {**row, "id": "v1_1"}
    del nodur["duration"]
    (data / "lvb_val.json").write_text(json.dumps([row, nodur]))
    out = tmp_path / "out"
    assert main(["eval", "benchmark=longvideobench", f"model.path={checkpoints['vamba']}", f"data_dir={data}",
                 "frames.count=4", "subtitles=true", f"output_dir={out}", "max_new_tokens=2"]) == 0
    rows = {r["qid"]: r for r in read_results(out / "results.jsonl")}
    # n = min(4, int(2.0)) = 2 frames at i * int(int(2.0 * 4) / 2): frames 0 and 4, at 0 s and 1 s
    assert "<|vision_end|>kept line\nQuestion: What?\nA. a\nB. b\n" in rows["v1_0"]["prompt"]
    assert "dropped" not in rows["v1_0"]["prompt"] and rows["v1_0"]["subtitles"] == "used"
    assert "lvb_val.json record 1: missing field duration" in rows["v1_1"]["error"]
    assert not rows["v1_1"]["error"].startswith("video:")
