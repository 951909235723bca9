"""Benchmark loaders on REAL annotation files (a NExT-QA sample, the Video-MME template) and on files written here
in each benchmark's published schema (docs/protocols.md); aggregation checked against hand-computed small cases.

The NExT-QA sample is in `tests/fixtures/nextqa` (MIT). Video-MME's licence forbids redistribution: its template is
read in place from the shared folder (`conftest.SHARED`) and the tests built on it skip without it.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from conftest import FIXTURES, SHARED

from vamba.data.annotations import AnnotationError
from vamba.evals.benchmark import Question, load_warnings, read_json_lenient
from vamba.evals.benchmarks import get_benchmark, list_benchmarks

ALL = ["captions", "dream1k", "houreval", "hourvideo", "longvideobench", "lvbench", "mlvu", "mvbench", "nextqa",
       "synthetic", "videomme"]


def rec(qid: str, letter: str | None, answer: str | None, categories: dict | None = None, error: str | None = None,
        **extra) -> dict:
    return {"qid": qid, "letter": letter, "answer": answer, "categories": categories or {}, "error": error, **extra}


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------------------------
# Registry


def test_registry() -> None:
    assert list_benchmarks() == ALL
    assert get_benchmark("Video-MME").name == "videomme"
    assert get_benchmark("next_qa").name == "nextqa"
    with pytest.raises(ValueError) as err:
        get_benchmark("egoschema")
    assert "egoschema" in str(err.value) and all(name in str(err.value) for name in ALL)


def test_aggregate_shape_for_every_benchmark() -> None:
    # record 2 is unparsed with one option: a random draw (LongVideoBench, NExT-QA official) can only give A
    records = [rec("1", "A", "A", {"g": ["x"]}), rec("2", None, "B", {"g": ["x"]}, num_options=1),
               rec("3", "A", "B", error="boom"), rec("4", "C", None)]
    for name in ALL:
        bench = get_benchmark(name)
        # a composite benchmark's records name their member: the same records, as one member's
        recs = [{**r, "qid": f"longvideobench/{r['qid']}"} for r in records] if bench.members else records
        for scoring in ("official", "release"):
            out = bench.aggregate(recs, scoring)
            assert set(out) >= {"benchmark", "scoring", "rule", "headline", "overall", "groups", "unparsed", "errors"}
            assert (out["benchmark"], out["scoring"]) == (name, scoring)
            assert out["rule"] and isinstance(out["headline"], float)
            assert (out["unparsed"], out["errors"], out["unscored"]) == (1, 1, 1)
            assert out["overall"]["correct"] == 1
            if scoring == "release":
                assert out["rule"].startswith("Vamba release")
                assert out["overall"]["total"] == 3 and out["headline"] == pytest.approx(100 / 3)


# ----------------------------------------------------------------------------------------------------------------
# NExT-QA: real files


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("split", ["val.csv", "test.csv"])
def test_nextqa_real_files(split: str) -> None:
    data_dir = FIXTURES / "nextqa"  # the first 200 questions of each official file (PROVENANCE.md)
    bench = get_benchmark("nextqa")
    questions = bench.load(data_dir, Path(split)) if split != "test.csv" else bench.load(data_dir)
    rows = _csv_rows(data_dir / split)
    count = len(rows)
    assert len(questions) == count == 200 and not [q for q in questions if q.error]
    vmap = json.loads((data_dir / "map_vid_vidorID.json").read_text())
    for q, row in zip(questions, rows, strict=True):
        assert q.qid == f"{row['video']}_{row['qid']}"
        assert q.answer == "ABCDE"[int(row["answer"])]
        assert q.options == [row[f"a{k}"] for k in range(5)]
        # the map file resolves the video path: NExTVideo/<folder>/<video>.mp4
        assert q.video == f"NExTVideo/{vmap[row['video']]}.mp4"
        assert "/" in vmap[row["video"]] and q.video.split("/")[1] == vmap[row["video"]].split("/")[0]
    fams = {"C": 0, "T": 0, "D": 0}
    for row in rows:
        fams[row["type"][0]] += 1
    out = bench.aggregate([rec(q.qid, q.answer, q.answer, bench.categories_for(q, "official")) for q in questions])
    assert {k: v["total"] for k, v in out["groups"]["family"].items()} == {f"Acc@{k}": v for k, v in fams.items()}
    assert out["headline"] == 100.0 and out["overall"]["total"] == count
    # the official per-type table merges TP into TN (eval_mc.py); the release prints raw types
    tn = sum(r["type"] in ("TN", "TP") for r in rows)
    assert "TP" not in out["groups"]["type"] and out["groups"]["type"]["TN"]["total"] == tn
    release = bench.aggregate([rec(q.qid, q.answer, q.answer, bench.categories_for(q, "release")) for q in questions],
                              "release")
    assert set(release["groups"]) == {"type"} and release["groups"]["type"]["TP"]["total"] > 0


def test_nextqa_flat_fallback_and_errors(tmp_path: Path) -> None:
    header = "video,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4\n"
    (tmp_path / "val.csv").write_text(header + "111,900,640,480,why,3,4,CW,a,b,c,d,e\n"
                                               "222,900,640,480,what,0,1,DO,a,b,c,d,e\n")
    write_json(tmp_path / "map_vid_vidorID.json", {"111": "0007/111"})
    (tmp_path / "NExTVideo").mkdir()
    (tmp_path / "NExTVideo" / "111.mp4").write_bytes(b"")  # a flat mirror: the mapped path does not exist
    qs = get_benchmark("nextqa").load(tmp_path, Path("val.csv"))
    assert [q.video for q in qs] == ["NExTVideo/111.mp4", "NExTVideo/222.mp4"]
    assert qs[0].answer == "D" and qs[0].categories == {"type": ["CW"], "family": ["Acc@C"]}
    (tmp_path / "NExTVideo" / "0007").mkdir()
    (tmp_path / "NExTVideo" / "0007" / "111.mp4").write_bytes(b"")
    assert get_benchmark("nextqa").load(tmp_path, Path("val.csv"))[0].video == "NExTVideo/0007/111.mp4"

    (tmp_path / "bad.csv").write_text(header + "111,900,640,480,why,3,4,CW,a,b,c,d,e\n"
                                               "222,900,640,480,what,7,1,DO,a,b,c,d,e\n")
    # a bad row is that question's error (naming file, line and field); the other rows load
    bad = get_benchmark("nextqa").load(tmp_path, Path("bad.csv"))
    assert bad[0].error is None and "bad.csv:3: field 'answer' '7'" in bad[1].error
    (tmp_path / "cols.csv").write_text("video,question,answer\n1,q,0\n")
    with pytest.raises(AnnotationError, match=r"cols\.csv:1: missing column"):
        get_benchmark("nextqa").load(tmp_path, Path("cols.csv"))


def test_nextqa_acc_families() -> None:
    def c(t: str) -> dict:
        return {"type": [t], "family": [{"C": "Acc@C", "T": "Acc@T", "D": "Acc@D"}[t[0]]]}

    records = [rec("1", "A", "A", c("CW")), rec("2", "B", "A", c("CH")), rec("3", "C", "C", c("CH")),
               rec("4", "A", "A", c("TN")), rec("5", "A", "A", c("TP")), rec("6", "E", "D", c("TC")),
               rec("7", "A", "B", c("DL")), rec("8", "D", "D", c("DO"))]
    out = get_benchmark("nextqa").aggregate(records)
    fam = out["groups"]["family"]
    assert (fam["Acc@C"]["correct"], fam["Acc@C"]["total"]) == (2, 3)
    assert (fam["Acc@T"]["correct"], fam["Acc@T"]["total"]) == (2, 3)
    assert (fam["Acc@D"]["correct"], fam["Acc@D"]["total"]) == (1, 2)
    assert out["groups"]["type"]["CH"]["accuracy"] == pytest.approx(50.0)
    assert out["headline"] == pytest.approx(500 / 8) and out["unparsed"] == 0


# ----------------------------------------------------------------------------------------------------------------
# Video-MME: the real output template, turned into a parquet fixture


def _videomme_parquet(tmp_path: Path) -> tuple[Path, list[dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    template = read_json_lenient(SHARED / "benchmarks" / "videomme" / "output_test_template.json")
    rows = []
    for video in template:
        for q in video["questions"]:
            rows.append({"video_id": video["video_id"], "duration": video["duration"], "domain": video["domain"],
                         "sub_category": video["sub_category"], "url": f"https://www.youtube.com/watch?v=v{video['video_id']}",
                         "videoID": f"v{video['video_id']}", "question_id": q["question_id"],
                         "task_type": q["task_type"], "question": q["question"], "options": q["options"],
                         "answer": q["answer"], "response": q["response"]})
    path = tmp_path / "videomme" / "test-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "response"} for r in rows]), path)
    return path, rows


@pytest.mark.shared("benchmarks/videomme")
def test_videomme_template(tmp_path: Path) -> None:
    _, rows = _videomme_parquet(tmp_path)
    assert len(rows) == 9  # the official template: 3 videos x 3 questions
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "v002.MP4").write_bytes(b"")  # an upper-case extension is found by stem
    (tmp_path / "data" / "v003.mp4").write_bytes(b"")
    (tmp_path / "subtitle").mkdir()
    (tmp_path / "subtitle" / "v003.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nhello\n")
    bench = get_benchmark("videomme")
    qs = bench.load(tmp_path)
    assert [q.qid for q in qs] == [r["question_id"] for r in rows]
    q = qs[0]
    assert q.options == ["Apples.", "Candles.", "Berries.", "The three kinds are of the same number."]
    assert q.answer == "C" and q.categories == {"duration": ["short"], "domain": ["Knowledge"],
                                                 "sub_category": ["Humanity & History"],
                                                 "task_type": ["Counting Problem"]}
    assert [q.video for q in qs[::3]] == ["data/v001.mp4", "data/v002.MP4", "data/v003.mp4"]
    assert [q.subtitles for q in qs[::3]] == [None, None, "subtitle/v003.srt"]
    # the template's responses, scored by the official rule: 7 of 9 (001-2 answers D for A, 002-3 D for B)
    records = [rec(q.qid, bench.extract(r["response"], q, "official"), q.answer, q.categories)
               for q, r in zip(qs, rows)]
    assert [r["letter"] for r in records] == ["C", "D", "D", "C", "D", "D", "B", "C", "D"]
    out = bench.aggregate(records, "official")
    assert out["headline"] == pytest.approx(700 / 9)
    counting = out["groups"]["task_type"]["Counting Problem"]
    assert (counting["correct"], counting["total"]) == (3, 4)
    assert out["groups"]["duration"]["short"]["total"] == 9


def test_videomme_excludes_unparsed(tmp_path: Path) -> None:
    bench = get_benchmark("videomme")
    cats = {"duration": ["long"]}
    records = [rec("1", "A", "A", cats), rec("2", "B", "B", cats), rec("3", "C", "D", cats), rec("4", None, "A", cats),
               rec("5", None, "B", {"duration": ["short"]})]
    official, release = bench.aggregate(records, "official"), bench.aggregate(records, "release")
    assert official["overall"] == {"accuracy": pytest.approx(200 / 3), "correct": 2, "total": 3}
    assert official["headline"] == pytest.approx(200 / 3) and official["unparsed"] == 2
    assert official["groups"]["duration"]["short"]["total"] == 0  # listed, but all excluded
    assert release["headline"] == pytest.approx(40.0) and release["overall"]["total"] == 5
    # an error is not an empty extraction: it counts wrong even under the exclusion rule
    with_error = bench.aggregate(records + [rec("6", None, "A", cats, error="video missing")], "official")
    assert with_error["overall"]["total"] == 4 and with_error["errors"] == 1


@pytest.mark.shared("benchmarks/videomme")
def test_videomme_malformed(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, rows = _videomme_parquet(tmp_path)
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["videoID"]), tmp_path / "nocol.parquet")
    with pytest.raises(AnnotationError, match=r"nocol\.parquet: missing column\(s\) videoID"):
        get_benchmark("videomme").load(tmp_path, tmp_path / "nocol.parquet")
    bad = table.to_pylist()
    bad[1]["answer"] = "E"
    pq.write_table(pa.Table.from_pylist(bad), tmp_path / "bad.parquet")
    qs = get_benchmark("videomme").load(tmp_path, tmp_path / "bad.parquet")  # that question's error; the run goes on
    assert qs[0].error is None and "bad.parquet row 1: field 'answer' 'E'" in qs[1].error and len(qs) == 9
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(AnnotationError, match=r"junk\.parquet: cannot read as parquet"):
        get_benchmark("videomme").load(tmp_path, tmp_path / "junk.parquet")


# ----------------------------------------------------------------------------------------------------------------
# LVBench (and the synthetic benchmark, same schema)

LVB_ROWS = [
    {"key": "xYz123AbCdE", "type": "sport",
     "video_info": {"duration_minutes": 71.5, "fps": 25.0, "resolution": {"width": 1280, "height": 720}},
     "qa": [{"uid": 90001,
             "question": "What colour is the goalkeeper's shirt?\n(A) red\n(B) green\n(C) black\n(D) white",
             "answer": "B", "question_type": ["entity recognition", "key information retrieval"],
             "time_reference": "12:03-12:09"},
            {"uid": 90002, "question": "Why does the crowd cheer?\n(A) a goal\n(B) a foul\n(C) rain\n(D) a song",
             "answer": "A", "question_type": ["reasoning"], "time_reference": "40:00-40:10"}]},
    {"key": "QwErTy98765", "type": "tv", "video_info": {"duration_minutes": 60.0, "fps": 30.0,
                                                        "resolution": {"width": 640, "height": 360}},
     "qa": [{"uid": 90003, "question": "Who enters first?\n(A) the host\n(B) a dog\n(C) a child\n(D) nobody",
             "answer": "C", "question_type": ["entity recognition", "temporal grounding"], "time_reference": "0:10"}]},
]


def _write_lvbench(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "video_info.meta.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_lvbench_loader(tmp_path: Path) -> None:
    _write_lvbench(tmp_path, LVB_ROWS)
    bench = get_benchmark("lvbench")
    qs = bench.load(tmp_path)
    assert [q.qid for q in qs] == ["90001", "90002", "90003"]
    q = qs[0]
    assert q.question == "What colour is the goalkeeper's shirt?" and q.options == ["red", "green", "black", "white"]
    assert q.answer == "B" and q.video == "videos/xYz123AbCdE.mp4"
    assert q.categories == {"question_type": ["entity recognition", "key information retrieval"]}
    # the prompt re-renders the file's question text exactly
    assert bench.prompt(q).endswith("\n" + LVB_ROWS[0]["qa"][0]["question"])
    # a key -> file map (video2dataset's shard names) is used when present
    write_json(tmp_path / "video_map.json", {"xYz123AbCdE": "videos/00000/00000000.mp4"})
    assert [q.video for q in bench.load(tmp_path)] == ["videos/00000/00000000.mp4"] * 2 + ["videos/QwErTy98765.mp4"]


def test_lvbench_multilabel_aggregation() -> None:
    bench = get_benchmark("lvbench")
    ER, KIR, REA, TG = "entity recognition", "key information retrieval", "reasoning", "temporal grounding"
    records = [rec("1", "B", "B", {"question_type": [ER, KIR]}), rec("2", "A", "C", {"question_type": [ER]}),
               rec("3", "D", "D", {"question_type": [KIR, REA]}), rec("4", None, "A", {"question_type": [TG]})]
    out = bench.aggregate(records, "official")
    groups = out["groups"]["question_type"]
    assert {k: (v["correct"], v["total"]) for k, v in groups.items()} == {ER: (1, 2), KIR: (2, 2), REA: (1, 1),
                                                                            TG: (0, 1)}
    assert sum(v["total"] for v in groups.values()) == 6  # 4 questions, 6 category memberships
    assert out["headline"] == pytest.approx(50.0) and out["overall"]["total"] == 4
    # the official cleaner reads "(B) green" and "The answer is (B)." as B, and is case-sensitive (exact match)
    q = Question("1", "v.mp4", "Q?", ["a", "b", "c", "d"], "B", {"question_type": [ER]})
    assert [bench.extract(r, q, "official") for r in ("(B) green", "The answer is (B).", "b", "I think B")] == [
        "B", "B", None, None]
    assert [bench.extract(r, q, "release") for r in ("(B) green", "The answer is (B).", "b", "I think B")] == [
        "B", "B", "B", None]


def test_lvbench_malformed(tmp_path: Path) -> None:
    path = _write_lvbench(tmp_path, LVB_ROWS)
    path.write_text(path.read_text().replace('"type": "tv"', '"type": tv'))
    with pytest.raises(AnnotationError, match=r"video_info\.meta\.jsonl:2: invalid JSON"):
        get_benchmark("lvbench").load(tmp_path)
    broken = json.loads(json.dumps(LVB_ROWS))
    broken[1]["qa"][0]["question"] = "Who enters first? (A) the host (B) a dog"
    del broken[0]["qa"][1]["answer"]
    _write_lvbench(tmp_path, broken)
    qs = get_benchmark("lvbench").load(tmp_path)  # bad records are their questions' errors; the rest load
    assert [q.qid for q in qs] == ["90001", "90002", "90003"] and qs[0].error is None
    assert qs[1].error.endswith("video_info.meta.jsonl:1 (qa 1): missing field(s) answer")
    assert "video_info.meta.jsonl:2 (qa 0): question must end with options" in qs[2].error
    broken = json.loads(json.dumps(LVB_ROWS))
    broken[0]["qa"][1]["uid"] = 90001
    _write_lvbench(tmp_path, broken)
    with pytest.raises(AnnotationError, match="duplicate question id '90001'"):
        get_benchmark("lvbench").load(tmp_path)


def test_synthetic_benchmark(synthetic_data: Path) -> None:
    from vamba.data.synthetic import LETTER_INSTRUCTION

    bench = get_benchmark("synthetic")
    qs = bench.load(synthetic_data)
    rows = [json.loads(line) for line in (synthetic_data / "video_info.meta.jsonl").read_text().splitlines()]
    assert len(qs) == sum(len(r["qa"]) for r in rows) == 8
    for q in qs:
        assert (synthetic_data / q.video).is_file()
        assert len(q.options) == 4 and q.answer in "ABCD" and len(q.categories["question_type"]) == 2
    # the evaluation prompt is the prompt training conversations use
    assert bench.prompt(qs[0]) == f"{LETTER_INSTRUCTION}\n{rows[0]['qa'][0]['question']}"
    out = bench.aggregate([rec(q.qid, q.answer, q.answer, q.categories) for q in qs])
    assert out["headline"] == 100.0


# ----------------------------------------------------------------------------------------------------------------
# HourVideo

HOUR = {
    "00000000-aaaa-bbbb-cccc-000000000000": {"video_metadata": {"duration_in_seconds": 3000}, "benchmark_dataset": [
        {"qid": "q1", "task": "reasoning/predictive", "question": "What will I most likely do next?",
         "mcq_test": "A. wash a mug\nB. dry a pan\nC. cut bread\nD. open fridge\nE. sweep floor",
         "answer_1": "wash a mug", "answer_2": "dry a pan", "answer_3": "cut bread", "answer_4": "open fridge",
         "answer_5": "sweep floor", "correct_answer_label": "B", "relevant_timestamps": "00:10:00 - 00:10:30"},
        {"qid": "q2", "task": "summarization/key_events", "question": "Summarize the morning.",
         "mcq_test": "A. cooking\nB. cleaning\nC. reading\nD. sleeping\nE. shopping", "correct_answer_label": "A"},
    ]},
    "11111111-aaaa-bbbb-cccc-000000000000": {"video_metadata": {"duration_in_seconds": 4000}, "benchmark_dataset": [
        {"qid": "q1", "task": "reasoning/spatial/layout", "question": "Where is the sink?",
         "mcq_test": "A. left\nB. right\nC. ahead\nD. behind\nE. upstairs", "answer_1": "left", "answer_2": "right",
         "answer_3": "ahead", "answer_4": "behind", "answer_5": "upstairs", "correct_answer_label": "E"},
    ]},
}


def test_hourvideo(tmp_path: Path) -> None:
    write_json(tmp_path / "v1.0_release" / "json" / "dev_v1.0_annotations.json", HOUR)
    bench = get_benchmark("hourvideo")
    qs = bench.load(tmp_path)
    assert [q.qid for q in qs] == ["00000000-aaaa-bbbb-cccc-000000000000/q1", "00000000-aaaa-bbbb-cccc-000000000000/q2",
                                   "11111111-aaaa-bbbb-cccc-000000000000/q1"]
    assert qs[0].options == ["wash a mug", "dry a pan", "cut bread", "open fridge", "sweep floor"]
    assert qs[1].options == ["cooking", "cleaning", "reading", "sleeping", "shopping"]  # parsed from mcq_test
    assert qs[0].video == "videos/00000000-aaaa-bbbb-cccc-000000000000.mp4"
    assert qs[2].categories == {"task_family": ["reasoning"], "task": ["reasoning/spatial/layout"]}
    assert [q.answer for q in qs] == ["B", "A", "E"]
    records = [rec(q.qid, bench.extract(r, q, "official"), q.answer, q.categories)
               for q, r in zip(qs, ["B", "The answer is A", "E"])]
    out = bench.aggregate(records, "official")  # first char: "T" is no letter -> wrong
    assert out["headline"] == pytest.approx(200 / 3)
    assert out["groups"]["task_family"]["reasoning"] == {"accuracy": 100.0, "correct": 2, "total": 2}
    # the file may also sit at the data-dir root
    write_json(tmp_path / "flat" / "dev_v1.0_annotations.json", HOUR)
    assert len(bench.load(tmp_path / "flat")) == 3


def test_hourvideo_malformed(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(HOUR))
    bad["11111111-aaaa-bbbb-cccc-000000000000"]["benchmark_dataset"][0]["correct_answer_label"] = "F"
    path = write_json(tmp_path / "ann.json", bad)
    qs = get_benchmark("hourvideo").load(tmp_path, path)
    assert [q.error is None for q in qs] == [True, True, False]
    uid = "11111111-aaaa-bbbb-cccc-000000000000"
    assert f"ann.json video {uid} question 0: field 'correct_answer_label' 'F'" in qs[2].error
    write_json(path, [1, 2])
    with pytest.raises(AnnotationError, match=r"ann\.json: expected an object keyed by video_uid"):
        get_benchmark("hourvideo").load(tmp_path, path)


# ----------------------------------------------------------------------------------------------------------------
# MLVU

MLVU_TASKS = ["plotQA", "findNeedle", "ego", "count", "order", "anomaly_reco", "topic_reasoning"]
MLVU_FILES = ["1_plotQA", "2_needle", "3_ego", "4_count", "5_order", "6_anomaly_reco", "7_topic_reasoning"]


def _write_mlvu(tmp_path: Path) -> None:
    for stem, task in zip(MLVU_FILES, MLVU_TASKS):
        rows = [{"video": f"{task}_{i}.mp4", "duration": 512.4, "question": f"Q{i} of {task}?",
                 "candidates": ["Desert", "Forest", "Ocean", "City"], "answer": "Forest", "question_type": task}
                for i in range(2)]
        if task == "plotQA":
            rows[1]["answer"] = "  forest "  # no exact match: gold '@' (counted, never right), warned
            rows.append({**rows[0], "answer": "Jungle"})  # no match at all: the same
        write_json(tmp_path / "json" / f"{stem}.json", rows)


def test_mlvu_loader(tmp_path: Path) -> None:
    _write_mlvu(tmp_path)
    (tmp_path / "video" / "1_plotQA").mkdir(parents=True)  # HF-style folder named like the file
    (tmp_path / "video" / "1_plotQA" / "plotQA_0.mp4").write_bytes(b"")
    qs = get_benchmark("mlvu").load(tmp_path)
    assert len(qs) == 15
    plot = [q for q in qs if q.categories == {"question_type": ["plotQA"]}]
    assert [q.answer for q in plot] == ["B", "@", "@"]
    assert "forest" in load_warnings(qs)[0] and "Jungle" in load_warnings(qs)[1] and len(load_warnings(qs)) == 2
    assert plot[0].video == "video/1_plotQA/plotQA_0.mp4" and plot[1].video == "video/plotQA/plotQA_1.mp4"
    needle = next(q for q in qs if q.categories["question_type"] == ["findNeedle"])
    assert needle.video == "video/needle/findNeedle_0.mp4" and needle.qid == "findNeedle_0"
    single = get_benchmark("mlvu").load(tmp_path, tmp_path / "json" / "3_ego.json")
    assert len(single) == 2


def test_mlvu_m_avg_vs_pooled() -> None:
    # plotQA: 3 of 4; the six other tasks one question each, three right and three wrong
    records = [rec(f"p{i}", "A" if i < 3 else "B", "A", {"question_type": ["plotQA"]}) for i in range(4)]
    for k, task in enumerate(MLVU_TASKS[1:]):
        records.append(rec(task, "C", "C" if k < 3 else "D", {"question_type": [task]}))
    records.append(rec("unscored", "A", None, {"question_type": ["plotQA"]}))
    bench = get_benchmark("mlvu")
    official, release = bench.aggregate(records, "official"), bench.aggregate(records, "release")
    assert official["headline"] == pytest.approx((75 + 3 * 100) / 7)  # M-Avg
    assert official["overall"]["accuracy"] == pytest.approx(60.0)  # pooled, 6 of 10
    assert release["headline"] == pytest.approx(60.0)
    assert official["unscored"] == 1 and "M-Avg" in official["rule"]


def test_mlvu_malformed(tmp_path: Path) -> None:
    _write_mlvu(tmp_path)
    (tmp_path / "json" / "5_order.json").unlink()
    with pytest.raises(AnnotationError, match="missing MLVU multiple-choice file.*5_order.json"):
        get_benchmark("mlvu").load(tmp_path)
    write_json(tmp_path / "json" / "5_order.json", [{"video": "x.mp4", "question": "q", "answer": "a",
                                                      "candidates": ["a", "b"], "question_type": "order"},
                                                     {"video": "y.mp4", "question": "q", "answer": "a",
                                                      "question_type": "order"}])
    qs = get_benchmark("mlvu").load(tmp_path)
    order = [q for q in qs if q.qid.startswith("order_")]
    assert order[0].error is None and order[1].error.endswith("5_order.json record 1: missing field(s) candidates")


# ----------------------------------------------------------------------------------------------------------------
# LongVideoBench


def _lvb_row(i: int, n: int, choice: int | None, dur: int = 600, cat: str = "S2E") -> dict:
    row = {"video_id": f"vid{i}", "id": f"vid{i}_0", "video_path": f"vid{i}.mp4", "subtitle_path": f"vid{i}_en.json",
           "question": f"Question {i}?", "question_wo_referring_query": "q", "candidates": [f"c{k}" for k in range(n)],
           "position": [1], "topic_category": "NP", "question_category": cat, "level": "L1", "duration": 500.0,
           "duration_group": dur, "starting_timestamp_for_subtitles": 0}
    if choice is not None:
        row["correct_choice"] = choice
    return row


def test_longvideobench_loader(tmp_path: Path) -> None:
    write_json(tmp_path / "lvb_val.json", [_lvb_row(0, 4, 0), _lvb_row(1, 5, 4, 3600, "T2O")])
    qs = get_benchmark("longvideobench").load(tmp_path)
    assert [q.answer for q in qs] == ["A", "E"] and [len(q.options) for q in qs] == [4, 5]
    assert qs[1].categories == {"duration_group": ["3600"], "question_category": ["T2O"]}
    assert qs[0].video == "videos/vid0.mp4" and qs[0].subtitles == "subtitles/vid0_en.json"
    assert get_benchmark("longvideobench").letters_for(qs[0]) == "ABCD"
    write_json(tmp_path / "lvb_test_wo_gt.json", [_lvb_row(2, 4, None)])
    assert get_benchmark("longvideobench").load(tmp_path, Path("lvb_test_wo_gt.json"))[0].answer is None
    for bad in (4, -1, True, "1"):
        write_json(tmp_path / "bad.json", [_lvb_row(0, 4, 0), _lvb_row(1, 4, bad)])
        qs = get_benchmark("longvideobench").load(tmp_path, tmp_path / "bad.json")
        assert qs[0].error is None and "bad.json record 1: field 'correct_choice'" in qs[1].error


def test_longvideobench_seeded_random_fallback() -> None:
    bench = get_benchmark("longvideobench")
    records = [rec(f"q{i}", None, "A", {"duration_group": ["600"]}, options=["w", "x", "y", "z"]) for i in range(400)]
    first = bench.aggregate(records, "official", seed=0)
    assert bench.aggregate(records, "official", seed=0) == first  # reproducible
    assert 15 < first["headline"] < 35  # about 1 in 4 by chance
    assert first["overall"]["total"] == 400 and first["unparsed"] == 400
    others = {bench.aggregate(records, "official", seed=s)["overall"]["correct"] for s in range(1, 6)}
    assert others != {first["overall"]["correct"]}  # the seed matters
    # one stream seeded once, one `choice` per failed reply in the order given (the scorer's random.choice calls)
    rng = random.Random(0)
    assert first["overall"]["correct"] == sum(rng.choice("ABCD") == "A" for _ in range(400))
    # the draw stays within the question's own options: "E" is never drawn for a 4-option question
    e4 = [rec(f"e{i}", None, "E", options=["a", "b", "c", "d"]) for i in range(100)]
    e5 = [rec(f"e{i}", None, "E", num_options=5) for i in range(100)]
    assert bench.aggregate(e4, "official")["overall"]["correct"] == 0
    assert bench.aggregate(e5, "official")["overall"]["correct"] > 0
    # release scoring: unparsed is wrong, no randomness
    assert bench.aggregate(records, "release")["headline"] == 0.0
    # errors are never randomised
    assert bench.aggregate([rec("z", None, "A", error="decode failed", num_options=1)], "official")["headline"] == 0.0


# ----------------------------------------------------------------------------------------------------------------
# MVBench


def test_mvbench(tmp_path: Path) -> None:
    write_json(tmp_path / "json" / "action_sequence.json", [
        {"video": "ZS9XR.mp4", "question": "What happened after the person took the box?",
         "candidates": ["Opened the door.", "Sat on the bed.", "Put down the box."], "answer": "Put down the box.",
         "start": 11.1, "end": 36.8},
        {"video": "AB12C.mp4", "question": "What did the person do first?", "candidates": ["Ate.", "Drank."],
         "answer": "Drank.", "start": 0, "end": 5}])
    write_json(tmp_path / "json" / "episodic_reasoning.json", [
        {"video": "s01e02_seg01", "question": "Why?", "candidates": ["a", "b", "c", "d", "e"], "answer": "e",
         "start": 3.0, "end": 9.5}])
    write_json(tmp_path / "json" / "object_shuffle.json", [
        {"video": "video_123.mp4", "question": "Where is the ball?", "candidates": ["left", "middle", "right"],
         "answer": "Middle"}])
    bench = get_benchmark("mvbench")
    qs = bench.load(tmp_path)
    assert [q.qid for q in qs] == ["action_sequence_0", "action_sequence_1", "episodic_reasoning_0", "object_shuffle_0"]
    assert [q.answer for q in qs] == ["C", "B", "E", "@"]  # "Middle" equals no candidate exactly: gold '@'
    assert "'Middle' matches no candidate" in load_warnings(qs)[0]
    assert qs[0].video == "video/star/Charades_v1_480/ZS9XR.mp4" and (qs[0].start, qs[0].end) == (11.1, 36.8)
    assert qs[2].video == "video/tvqa/frames_fps3_hq/s01e02_seg01" and qs[2].extra["frames_fps"] == 3
    assert qs[3].video == "video/perception/videos/video_123.mp4" and qs[3].start is None  # unbounded task
    assert bench.letters_for(qs[1]) == "AB"
    # the official Avg is pooled (correct / total), not the task mean: 2/2, 0/1, 0/1 -> 50 (the task mean: 33.3)
    records = [rec(q.qid, q.answer if q.qid.startswith("action") else "A", q.answer, q.categories) for q in qs]
    out = bench.aggregate(records, "official")
    assert out["headline"] == pytest.approx(50.0) and out["overall"]["accuracy"] == pytest.approx(50.0)
    assert bench.aggregate(records, "release")["headline"] == pytest.approx(50.0)
    (tmp_path / "json" / "object_shuffle.json").write_text('[{"video": "x",\n "question": }]')
    with pytest.raises(AnnotationError, match=r"object_shuffle\.json:2: invalid JSON"):
        bench.load(tmp_path)
