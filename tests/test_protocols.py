"""The two evaluation protocols against the official and release sources that docs/protocols.md cites.

Prompts are compared byte for byte with the sources' literal templates (transcribed below with their placeholders
filled), for 4- and 5-option questions; the settings with the per-benchmark table; frame indices and the pre-resize
with their literal rules; subtitles with the selection rule on a real `.srt` written here. Real annotation records:
the LongVideoBench sample in `tests/fixtures/longvideobench` (CC BY-NC-SA 4.0); the reconstructed Video-MME set,
which may not be redistributed, read in place from the shared folder (`conftest.SHARED`; skipped without it).
Expectations about them are computed from the files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, SHARED

from vamba.data.frames import FrameSpec, edge_resize_size, linspace_indices, sample_indices, target_size
from vamba.evals.benchmark import Question
from vamba.evals.benchmarks import get_benchmark
from vamba.evals.benchmarks.longvideobench import loader_indices
from vamba.evals.benchmarks.mvbench import notebook_indices
from vamba.evals.benchmarks.videomme import extractor_indices
from vamba.evals.protocol import Settings, resolve
from vamba.evals.subtitles import SubtitleError, longvideobench_lines, videomme_lines

VIDEOMME = SHARED / "benchmarks" / "videomme" / "videomme_reconstructed.json"
LVB_SAMPLE = FIXTURES / "longvideobench" / "lvb_val_sample.json"

HEAD = "Select the best answer to the following multiple-choice question based on the video."
RESPOND4 = "Respond with only the letter (A, B, C, or D) of the correct option."
RESPOND5 = "Respond with only the letter (A, B, C, D, or E) of the correct option."
LVB_TAIL = "Answer with the option's letter from the given choices directly."
MLVU_SYSTEM = ("Carefully watch this video and pay attention to every detail. Based on your observations, select the "
               "best option that accurately addresses the question.")
MVB_SYSTEM = ("Carefully watch the video and pay attention to the cause and sequence of events, the detail and "
              "movement of objects, and the action and pose of persons. Based on your observations, select the best "
              "option that accurately addresses the question.")


def q_(options: list[str], question: str = "What does the man hold?", **kw) -> Question:
    return Question("q", "v.mp4", question, options, "A", {}, **kw)


FOUR = ["a cup", "a pen", "a phone", "a book"]
FIVE = FOUR + ["a key"]


# ----------------------------------------------------------------------------------------------------------------
# Prompts: docs/protocols.md's templates, literally


def test_mlvu_prompts() -> None:
    bench = get_benchmark("mlvu")
    q = q_(FOUR)
    assert bench.system_prompt("official") == MLVU_SYSTEM and bench.response_prefix("official") == "Best Option: ("
    assert bench.prompt(q, "official") == ("Question: What does the man hold?\nOptions:\n(A) a cup\n(B) a pen\n"
                                           "(C) a phone\n(D) a book\nOnly give the best option.")
    assert bench.system_prompt("release") is None and bench.response_prefix("release") == ""
    assert bench.prompt(q, "release") == (f"{HEAD} {RESPOND4}\nWhat does the man hold?\nA. a cup\nB. a pen\n"
                                          "C. a phone\nD. a book")


def test_longvideobench_prompts_four_and_five_options() -> None:
    bench = get_benchmark("longvideobench")
    for options in (FOUR, FIVE):
        lines = "".join(f"{'ABCDE'[k]}. {o}\n" for k, o in enumerate(options))
        assert bench.prompt(q_(options), "official") == f"Question: What does the man hold?\n{lines}{LVB_TAIL}"
        # the release keeps "(A, B, C, or D)" even above five options; the E. line only with five
        assert bench.prompt(q_(options), "release") == f"{HEAD} {RESPOND4}\nWhat does the man hold?\n{lines[:-1]}"
    assert bench.system_prompt("official") is None and bench.response_prefix("official") == ""


def test_mvbench_prompts_any_number_of_options() -> None:
    bench = get_benchmark("mvbench")
    assert bench.system_prompt("official") == MVB_SYSTEM + "\n" and bench.response_prefix("official") == "Best option:("
    for options in (["Opened the door."], FOUR[:3], FIVE):
        paren = "\n".join(f"({'ABCDE'[k]}) {o}" for k, o in enumerate(options))
        dot = "\n".join(f"{'ABCDE'[k]}. {o}" for k, o in enumerate(options))
        # system_llm=True: the system text (ending in a newline) also starts the user text
        assert bench.prompt(q_(options), "official") == (f"{MVB_SYSTEM}\nQuestion: What does the man hold?\n"
                                                         f"Options:\n{paren}\nOnly give the best option.")
        assert bench.prompt(q_(options), "release") == f"Question: What does the man hold?\n{dot}\n{LVB_TAIL}"
    assert bench.system_prompt("release") is None and bench.response_prefix("release") == ""


def test_nextqa_prompts() -> None:
    bench = get_benchmark("nextqa")
    q = q_(["to sleep ", "to eat", "to play", "to greet the man", "to hide"], "why did the dog run to the door ")
    assert bench.prompt(q, "official") == ("why did the dog run to the door\nA. to sleep\nB. to eat\nC. to play\n"
                                           "D. to greet the man\nE. to hide")  # lmms-eval strips, no instruction
    assert bench.prompt(q, "release") == (f"{HEAD} {RESPOND5}\nwhy did the dog run to the door \nA. to sleep \n"
                                          "B. to eat\nC. to play\nD. to greet the man\nE. to hide")


def test_lvbench_and_hourvideo_prompts() -> None:
    inline = "What colour is the shirt?\n(A) red\n(B) green\n(C) black\n(D) white"
    q = Question("1", "v.mp4", "What colour is the shirt?", ["red", "green", "black", "white"], "B", {},
                 extra={"raw_question": inline})
    for protocol in ("official", "release"):
        assert get_benchmark("lvbench").prompt(q, protocol) == f"{HEAD}\n{RESPOND4}\n{inline}"
    mcq = "A. wash a mug\nB. dry a pan\nC. cut bread\nD. open fridge\nE. sweep floor"
    hq = Question("u/q1", "v.mp4", "What will I most likely do next?", ["x"] * 5, "B", {}, extra={"mcq_test": mcq})
    for protocol in ("official", "release"):
        assert get_benchmark("hourvideo").prompt(hq, protocol) == (f"{HEAD}\nWhat will I most likely do next?\n{mcq}\n"
                                                                   f"{RESPOND5}")


def _videomme_records() -> list[dict]:
    return json.loads(VIDEOMME.read_text(encoding="utf-8"))


@pytest.mark.shared("benchmarks/videomme")
def test_videomme_real_annotations_and_prompts(tmp_path: Path) -> None:
    rows = _videomme_records()
    bench = get_benchmark("videomme")
    qs = bench.load(tmp_path, VIDEOMME)
    assert len(qs) == len(rows) == 2700 and not [q for q in qs if q.error]
    assert len({q.video for q in qs}) == 900
    per_duration = {}
    for r in rows:
        per_duration.setdefault(r["duration"], set()).add(r["video_id"])
    assert {k: len(v) for k, v in per_duration.items()} == {"short": 300, "medium": 300, "long": 300}
    assert {q.categories["duration"][0] for q in qs} == {"short", "medium", "long"}
    assert len({q.categories["task_type"][0] for q in qs}) == 12 and len({q.categories["domain"][0] for q in qs}) == 6
    for q, r in zip(qs, rows):  # every prompt, from the record's own fields and docs/protocols.md's templates
        assert q.qid == r["question_id"] and q.answer == r["answer"] and q.video == f"data/{r['videoID']}.mp4"
        options = r["options"]
        assert bench.prompt(q, "official") == (f"{HEAD} {RESPOND4}\n{r['question']}\n" + "\n".join(options)
                                               + "\nThe best answer is:")
        assert bench.prompt(q, "release") == f"{HEAD}\n{RESPOND4}\n{r['question']}\n" + " ".join(options)
    sub = bench.prompt(qs[0], "official", subtitles="line one\nline two")
    assert sub == "This video's subtitles are listed below:\nline one\nline two\n" + bench.prompt(qs[0], "official")


def test_longvideobench_real_records(tmp_path: Path) -> None:
    path = LVB_SAMPLE
    rows = json.loads(path.read_text(encoding="utf-8"))
    bench = get_benchmark("longvideobench")
    qs = bench.load(tmp_path, path)
    assert len(qs) == 25 and not [q for q in qs if q.error]
    assert sorted(len(q.options) for q in qs) == [4] * 16 + [5] * 9
    assert len({q.video for q in qs}) == 12
    assert {q.categories["duration_group"][0] for q in qs} == {"15", "600", "3600"}
    assert len({q.categories["question_category"][0] for q in qs}) == 8
    for q, r in zip(qs, rows):
        assert q.answer == "ABCDE"[r["correct_choice"]] and q.subtitles == f"subtitles/{r['subtitle_path']}"
        lines = [f"{'ABCDE'[k]}. {c}" for k, c in enumerate(r["candidates"])]
        assert bench.prompt(q, "official") == "\n".join([f"Question: {r['question']}", *lines, LVB_TAIL])
        assert bench.prompt(q, "release") == "\n".join([f"{HEAD} {RESPOND4}", r["question"], *lines])


def test_release_chat_frame() -> None:
    """docs/protocols.md §0.1: one user message, the video markers, then TEXT; the default system prompt; no priming."""
    from vamba.data.processor import VambaProcessor

    text = get_benchmark("mlvu").prompt(q_(FOUR), "release")
    rendered = VambaProcessor.tiny().render(
        [{"role": "user", "content": [{"type": "video", "video": None}, {"type": "text", "text": text}]}],
        add_generation_prompt=True)
    assert rendered == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                        f"<|vision_start|><|vision_end|>{text}<|im_end|>\n<|im_start|>assistant\n")


# ----------------------------------------------------------------------------------------------------------------
# Settings: docs/protocols.md §0.1's table


@pytest.mark.parametrize("name,frames,edge,sampler", [
    ("lvbench", 1024, 560, "linspace"), ("hourvideo", 128, 360, "linspace"), ("videomme", 512, 480, "linspace"),
    ("mlvu", 512, 480, "linspace"), ("longvideobench", 512, 480, "linspace"), ("mvbench", 512, 480, "mvbench"),
    ("nextqa", 512, None, "linspace")])
def test_release_settings(name: str, frames: int, edge: int | None, sampler: str) -> None:
    s = get_benchmark(name).protocol_settings("release")
    assert (s.frames, s.longest_edge, s.shortest_edge, s.sampler) == (frames, edge, 256, sampler)
    assert (s.max_new_tokens, s.top_p, s.top_k, s.subtitles) == (512, 0.9, 0, False)
    if name == "hourvideo":
        assert s.generation_kwargs() == {"max_new_tokens": 512, "do_sample": True, "temperature": 1.0, "top_p": 0.9,
                                         "top_k": 0}
    else:
        assert s.generation_kwargs() == {"max_new_tokens": 512, "do_sample": False}


def test_official_settings_use_the_benchmarks_own_samplers_and_lengths() -> None:
    official = {n: get_benchmark(n).protocol_settings("official") for n in ("videomme", "longvideobench", "mvbench",
                                                                            "mlvu", "hourvideo")}
    assert [official[n].sampler for n in ("videomme", "longvideobench", "mvbench")] == ["videomme", "longvideobench",
                                                                                         "mvbench"]
    assert official["mvbench"].max_new_tokens == official["mlvu"].max_new_tokens == 100
    assert not official["hourvideo"].do_sample


def test_command_line_values_override_the_protocol() -> None:
    from types import SimpleNamespace

    base = get_benchmark("videomme").protocol_settings("release")
    cfg = SimpleNamespace(frames=FrameSpec(count=256, longest_edge=0), max_new_tokens=None, do_sample=None,
                          temperature=None, top_p=None, top_k=None, subtitles=True)
    s, overrides = resolve(base, cfg)
    assert (s.frames, s.subtitles, s.longest_edge, s.max_new_tokens) == (256, True, None, 512)
    assert overrides == {"frames": 256, "subtitles": True, "longest_edge": None}
    with pytest.raises(ValueError, match="unknown frame sampler"):
        Settings(8, sampler="nope")
    with pytest.raises(ValueError, match="official, release"):
        get_benchmark("lvbench").prompt(q_(FOUR), "strict")


# ----------------------------------------------------------------------------------------------------------------
# Frames: the release's indices and pre-resize, the benchmarks' own samplers


def _literal_release_indices(total: int, n: int) -> list[int]:
    """docs/protocols.md §0.1, written out: index i = (s[i] + s[i+1]) // 2, s = linspace(0, T, N + 1) truncated;
    all frames if N >= T; the processor drops the last frame of an odd count."""
    if n >= total:
        idx = list(range(total))
    else:
        s = [k * total // n for k in range(n + 1)]  # the truncated linspace, in exact integers
        idx = [(s[i] + s[i + 1]) // 2 for i in range(n)]
    return idx[: len(idx) - len(idx) % 2]


def test_release_frame_indices_follow_the_literal_rule() -> None:
    rng = random.Random(0)
    totals = [1, 2, 3, 7, 127, 128, 129, 511, 512, 513, 1000, 1023, 1024, 1025] + [rng.randrange(2, 300_000)
                                                                                   for _ in range(200)]
    for total in totals:
        for n in (16, 64, 128, 256, 512, 1024):  # the release's counts (and the usual overrides)
            if total == 1:
                with pytest.raises(ValueError, match="keeps no frame"):
                    linspace_indices(total, n)
                continue
            assert linspace_indices(total, n).tolist() == _literal_release_indices(total, n), (total, n)
    assert sample_indices(1001, 30.0, "linspace", num_frames=2000).tolist() == list(range(1000))  # odd: last dropped
    assert sample_indices(10, 30.0, "linspace", num_frames=4).tolist() == [1, 3, 6, 8]


def test_release_pre_resize() -> None:
    # docs/protocols.md §0.1's example: 1280x720 at L=480 -> 480x270 -> 476x280 = 170 tokens per frame pair
    assert edge_resize_size(720, 1280, 480) == (270, 480)
    h, w = target_size(270, 480, min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
    assert (h, w) == (280, 476) and (h // 28) * (w // 28) == 170
    assert edge_resize_size(1280, 720, 560) == (560, 315)  # portrait: the long side is the height
    assert edge_resize_size(240, 320, 480) == (256, 320)  # no downscale; each side raised to >= 256 on its own
    assert edge_resize_size(360, 640, 360) == (256, 360)  # 640x360 at L=360 -> 360x202 -> 360x256


def test_pre_resize_matches_pil_bicubic(tmp_path: Path) -> None:
    """The two resizes (release edge rule, then the processor's) against PIL's bicubic, what the release used."""
    from PIL import Image

    from vamba.data.mp4 import write_synthetic_video
    from vamba.data.video import load_video

    path = tmp_path / "v.mp4"
    write_synthetic_video(path, num_frames=6, height=180, width=320, fps=6)
    native = load_video(path, FrameSpec(mode="linspace", count=4), resize=False)
    ours = load_video(path, FrameSpec(mode="linspace", count=4, longest_edge=288, shortest_edge=256,
                                      min_pixels=56 * 56, max_pixels=28 * 28 * 1280))
    mid = edge_resize_size(180, 320, 288, 256)
    assert mid == (256, 288) and ours.frames.shape[1:3] == target_size(*mid, min_pixels=56 * 56,
                                                                        max_pixels=28 * 28 * 1280)
    for rgb, got in zip(native.frames, ours.frames):
        pil = Image.fromarray(rgb).resize(mid[::-1], resample=Image.BICUBIC)
        pil = np.asarray(pil.resize(got.shape[1::-1], resample=Image.BICUBIC), dtype=np.float64)
        assert np.abs(pil - got).mean() < 0.1  # measured: 0.006 grey levels on average, at most 2


def test_benchmark_samplers_follow_their_official_loaders() -> None:
    # MVBench get_index: start = max(first, round(start*fps)), end = min(round(end*fps), max_frame),
    # seg = (end - start) / n, i -> int(start + seg/2 + round(seg*i))
    # (seg 74.75: 37.375 + round(74.75 i) with numpy's half-to-even round(149.5) = 150)
    assert notebook_indices(None, 30.0, 299, 0, 4).tolist() == [37, 112, 187, 261]
    assert notebook_indices((1.0, 3.0), 10.0, 99, 0, 4).tolist() == [12, 17, 22, 27]
    assert notebook_indices((0.0, 2.0), 3.0, 20, 1, 2).tolist() == [2, 4]  # frame folders: numbered from 1
    assert len(notebook_indices(None, 30.0, 59, 0, 512)) == 512  # short clips repeat indices
    # LongVideoBench: n = min(frames, int(duration)), i * int(int(duration*fps)/n)
    assert loader_indices(10_000, 30.0, 190.16, 512) == [i * 30 for i in range(190)]
    assert loader_indices(100, 25.0, 3.9, 8) == [0, 32, 64]  # n = 3, step int(int(97.5) / 3) = 32
    # Video-MME's extractor: s = (T-1)/N, (round(s*i) + round(s*(i+1))) // 2
    assert extractor_indices(101, 4).tolist() == [12, 37, 62, 87]


# ----------------------------------------------------------------------------------------------------------------
# Subtitles


SRT = """1
00:00:00,500 --> 00:00:02,000
<font color="white" size=".72c">Hello there</font>

2
00:00:02,000 --> 00:00:05,000
<font color="white" size=".72c">a cue on</font>
two lines

3
00:00:09,000 --> 00:00:12,000
last words
"""


def test_videomme_subtitle_lines_from_a_real_srt(tmp_path: Path) -> None:
    path = tmp_path / "v.srt"
    path.write_text(SRT, encoding="utf-8")
    # frames at 1 fps: t = 0 (no cue), 1 (cue 1), 2 (on the boundary: strictly inside none), 3 and 4 (cue 2 twice,
    # no de-duplication), 7 (no cue), 10 (cue 3)
    text = videomme_lines(path, [0, 1, 2, 3, 4, 7, 10], 1.0)
    assert text == "Hello there\na cue on two lines\na cue on two lines\nlast words"
    assert videomme_lines(path, [0, 7], 1.0) == ""  # no lines: the plain prompt is used
    (tmp_path / "bad.srt").write_bytes(b"\xff\xfe not a subtitle file \x00\x01")
    with pytest.raises(SubtitleError, match="bad.srt: subtitle file does not parse"):
        videomme_lines(tmp_path / "bad.srt", [0], 1.0)


def test_longvideobench_interleaved_subtitles(tmp_path: Path) -> None:
    cues = [{"timestamp": [10.0, 14.0], "text": "first"},
            {"timestamp": [20.0, 20.4], "text": "short, widened to 19.7-20.7"},
            {"timestamp": [30, 31], "text": "int end: runs to the video's end"},
            {"start": "0:00:45.0", "end": "0:00:46.5", "line": "no frame inside"},
            {"start": "0:00:59.0", "end": "0:01:02.0", "line": "h:m:s form"}]
    path = tmp_path / "s.json"
    path.write_text(json.dumps(cues))
    kept = longvideobench_lines(path, [12.0, 20.5, 50.0, 60.0], offset=0.0, duration=70.0)
    assert kept.split("\n") == ["first", "short, widened to 19.7-20.7", "int end: runs to the video's end",
                                "h:m:s form"]
    # the offset shifts every cue: at +10 s only the frame at 50 (cue 59-62 -> 49-52) and 20.5 (30-70 -> 20-60) stay
    assert longvideobench_lines(path, [12.0, 20.5, 50.0], offset=10.0, duration=70.0).split("\n") == [
        "int end: runs to the video's end", "h:m:s form"]
    path.write_text('{"not": "a list"}')
    with pytest.raises(SubtitleError, match="s.json: subtitle file does not parse"):
        longvideobench_lines(path, [1.0], 0.0, 10.0)


# ----------------------------------------------------------------------------------------------------------------
# Gold letters and aggregation: the same replies, two protocols


def _rec(qid: str, letter: str | None, answer: str | None, cats: dict | None = None, **kw) -> dict:
    return {"qid": qid, "letter": letter, "answer": answer, "categories": cats or {}, "error": None, **kw}


def test_mlvu_gold_duplicates_and_no_match(tmp_path: Path) -> None:
    rows = [{"video": "a.mp4", "question": "q?", "candidates": ["x", "y", "x", "z"], "answer": "x",
             "question_type": "plotQA"},
            {"video": "b.mp4", "question": "q?", "candidates": ["x", "y", "w", "z"], "answer": "Catching a drone",
             "question_type": "plotQA"}]
    (tmp_path / "1_plotQA.json").write_text(json.dumps(rows))
    bench = get_benchmark("mlvu")
    dup, nomatch = bench.load(tmp_path, tmp_path / "1_plotQA.json")
    assert bench.gold(dup, "official") == "C" and bench.gold(dup, "release") == "A"  # last vs first equal candidate
    assert bench.gold(nomatch, "official") == bench.gold(nomatch, "release") == "@"  # counted, never right
    records = [_rec(q.qid, "A", bench.gold(q, "release"), q.categories) for q in (dup, nomatch)]
    assert bench.aggregate(records, "release")["overall"] == {"accuracy": 50.0, "correct": 1, "total": 2}


def test_mvbench_official_counts_an_empty_reply_right(tmp_path: Path) -> None:
    (tmp_path / "counterfactual_inference.json").write_text(json.dumps([
        {"video": "v.mp4", "question": "What if?", "candidates": ["only one"], "answer": "only one"},
        {"video": "v.mp4", "question": "What if?", "candidates": ["a", "b"], "answer": "b"}]))
    bench = get_benchmark("mvbench")
    one, two = bench.load(tmp_path, tmp_path / "counterfactual_inference.json")
    assert (one.answer, one.options, two.answer) == ("A", ["only one"], "B")  # a one-candidate question loads
    replies = ["", "B"]
    for protocol, expected in (("official", 100.0), ("release", 50.0)):
        records = [_rec(q.qid, bench.extract(r, q, protocol), q.answer, q.categories) for q, r in zip((one, two),
                                                                                                     replies)]
        assert bench.aggregate(records, protocol)["headline"] == expected


def test_videomme_same_replies_two_protocols() -> None:
    bench = get_benchmark("videomme")
    q = Question("1", "v.mp4", "How many?", ["3.", "5.", "8.", "9."], "C", {"duration": ["short"]})
    replies = ["C", "C. 8.", "Based on the video, the answer is C.", "c", "", "The answer is C"]
    official = [_rec(str(i), bench.extract(r, q, "official"), "C", q.categories) for i, r in enumerate(replies)]
    release = [_rec(str(i), bench.extract(r, q, "release"), "C", q.categories) for i, r in enumerate(replies)]
    assert [r["letter"] for r in official] == ["C", "C", "B", None, None, "C"]
    assert [r["letter"] for r in release] == ["C", "C", "C", "C", None, "C"]
    # official: 3 right of 4 answered (two empty extractions left out); release: 5 right of 6
    assert bench.aggregate(official, "official")["overall"] == {"accuracy": 75.0, "correct": 3, "total": 4}
    assert bench.aggregate(release, "release")["overall"]["correct"] == 5
