"""HourEval (docs/protocols.md §8): the subsets its duration rule selects from REAL annotation records (the
LongVideoBench sample in `tests/fixtures`; the reconstructed Video-MME set, read in place from the shared folder and
skipped without it; expectations computed from the files), the release's filtered files, the MLVU member's four tasks,
and runs with tiny random weights on generated videos: both protocols' reports, the members scored exactly as the
member benchmarks score themselves, resume, torchrun sharding and the config's checks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, SHARED, run_torchrun

from vamba.cli import main
from vamba.data.annotations import AnnotationError
from vamba.data.mp4 import write_synthetic_video
from vamba.evals.benchmarks import get_benchmark
from vamba.evals.protocol import Settings
from vamba.evals.results import read_results

VIDEOMME = SHARED / "benchmarks" / "videomme" / "videomme_reconstructed.json"
LVB_SAMPLE = FIXTURES / "longvideobench" / "lvb_val_sample.json"
HOUREVAL = get_benchmark("houreval")
HEAD = "Select the best answer to the following multiple-choice question based on the video."
RESPOND4 = "Respond with only the letter (A, B, C, or D) of the correct option."
MLVU_SYSTEM = ("Carefully watch this video and pay attention to every detail. Based on your observations, select the "
               "best option that accurately addresses the question.")
#: MLVU's seven multiple-choice files and their official video folders (docs/protocols.md); HourEval reads four.
MLVU_FILES = {"1_plotQA": "plotQA", "2_needle": "needle", "3_ego": "ego", "4_count": "count", "5_order": "order",
              "6_anomaly_reco": "anomaly_reco", "7_topic_reasoning": "topic_reasoning"}
MLVU_TYPES = {"2_needle": "findNeedle", "4_count": "count", "5_order": "order", "6_anomaly_reco": "anomaly_reco"}


def _json(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def _parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _video(path: Path, frames: int = 8, fps: int = 4) -> None:
    write_synthetic_video(path, frames, width=64, height=48, fps=fps)


def _write_mlvu(root: Path, folder: str = "json", durations: tuple = (1200, 300)) -> None:
    """All seven MLVU task files (invented questions in the official schema, docs/protocols.md §4), one question per
    duration each."""
    for stem, video_dir in MLVU_FILES.items():
        task = MLVU_TYPES.get(stem, video_dir)
        rows = [{"video": f"{video_dir}_{i}.mp4", "duration": d, "question": f"Which colour is shown at step {i + 1}?",
                 "candidates": ["red", "green", "blue", "red"], "answer": "red", "question_type": task}
                for i, d in enumerate(durations)]
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / f"{stem}.json").write_text(json.dumps(rows))


# ----------------------------------------------------------------------------------------------------------------
# The subsets on the real files


@pytest.mark.shared("benchmarks/videomme")
def test_duration_rule_on_the_real_videomme_annotations(tmp_path: Path) -> None:
    path = VIDEOMME
    rows = _json(path)
    expected = [r["question_id"] for r in rows if r["duration"] == "long"]
    qs, sel = HOUREVAL.load_members({"videomme": tmp_path}, {"videomme": path})
    assert [q.qid for q in qs] == [f"videomme/{i}" for i in expected] and len(expected) == 900
    block = sel["members"]["videomme"]
    assert (block["questions"], block["videos"], block["in_file"], block["undecided"]) == (900, 300, 2700, 0)
    assert block["source"] == f"duration rule on {path}" and not block["filtered"]
    assert sel["left_out_members"] == ["mlvu", "longvideobench"] and "'long'" in sel["rule"]
    by_id = {r["question_id"]: r for r in rows}
    member = HOUREVAL.parts()["videomme"]
    for q in qs:  # the member's own video path and release prompt (docs/protocols.md §3), under the member's folder
        r = by_id[q.qid.removeprefix("videomme/")]
        assert q.video == str(tmp_path / "data" / f"{r['videoID']}.mp4")
        assert member.prompt(q, "release") == f"{HEAD}\n{RESPOND4}\n{r['question']}\n" + " ".join(r["options"])
    # the same full file in the member's own layout (the parquet), then the release's filtered file beside it
    _parquet(tmp_path / "videomme" / "test-00000-of-00001.parquet", rows)
    default, sel2 = HOUREVAL.load_members({"videomme": tmp_path})
    assert [q.qid for q in default] == [q.qid for q in qs]
    assert sel2["members"]["videomme"]["ids_sha256"] == block["ids_sha256"]
    picked = [r for r in rows if r["video_id"] in ("001", "302", "603")]
    assert {r["duration"] for r in picked} == {"short", "medium", "long"}  # the filtered file is read as is
    _parquet(tmp_path / "videomme" / "test-00000-of-00001-filtered.parquet", picked)
    filtered, sel3 = HOUREVAL.load_members({"videomme": tmp_path})
    assert [q.qid for q in filtered] == [f"videomme/{r['question_id']}" for r in picked]  # taken as is
    assert sel3["members"]["videomme"]["source"] == "filtered file videomme/test-00000-of-00001-filtered.parquet"
    # naming the full file explicitly applies the rule even where the filtered file exists
    again, _ = HOUREVAL.load_members({"videomme": tmp_path}, {"videomme": Path("videomme/test-00000-of-00001.parquet")})
    assert [q.qid for q in again] == [q.qid for q in qs]


def test_duration_rule_on_the_real_longvideobench_records(tmp_path: Path) -> None:
    path = LVB_SAMPLE
    rows = _json(path)
    expected = [r["id"] for r in rows if r["duration"] > 900]
    # the 900 s cut is LongVideoBench's own longest duration group on the real records
    assert expected == [r["id"] for r in rows if r["duration_group"] == 3600] and expected
    qs, sel = HOUREVAL.load_members({"longvideobench": tmp_path}, {"longvideobench": path})
    assert [q.qid for q in qs] == [f"longvideobench/{i}" for i in expected]
    by_id = {r["id"]: r for r in rows}
    for q in qs:
        r = by_id[q.qid.removeprefix("longvideobench/")]
        assert q.video == str(tmp_path / "videos" / r["video_path"])
        assert q.subtitles == str(tmp_path / "subtitles" / r["subtitle_path"])
    block = sel["members"]["longvideobench"]
    assert (block["questions"], block["videos"], block["in_file"]) == (len(expected), len({by_id[i]["video_id"]
                                                                                           for i in expected}), 25)
    (tmp_path / "lvb_val_filtered.json").write_text(json.dumps(rows[:3]))  # the release's filtered file, as is
    filtered, sel2 = HOUREVAL.load_members({"longvideobench": tmp_path})
    assert [q.qid for q in filtered] == [f"longvideobench/{r['id']}" for r in rows[:3]]
    assert sel2["members"]["longvideobench"]["source"] == "filtered file lvb_val_filtered.json"


def test_a_record_without_duration_falls_back_to_the_video_length(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "duration"} for r in _json(LVB_SAMPLE)[:3]]
    rows = [{**r, "id": f"r{i}", "video_path": f"v{i}.mp4"} for i, r in enumerate(rows)]
    write_synthetic_video(tmp_path / "videos" / "v0.mp4", 902, width=32, height=32, fps=1)  # 902 s: kept
    _video(tmp_path / "videos" / "v1.mp4")  # 2 s: not hour-long; v2.mp4 is missing: undecided, left out
    (tmp_path / "lvb_val.json").write_text(json.dumps(rows))
    qs, sel = HOUREVAL.load_members({"longvideobench": tmp_path})
    assert [q.qid for q in qs] == ["longvideobench/r0"]
    assert (sel["members"]["longvideobench"]["undecided"], sel["members"]["longvideobench"]["in_file"]) == (1, 3)


def test_mlvu_member_keeps_only_its_four_tasks(tmp_path: Path) -> None:
    _write_mlvu(tmp_path)
    qs, sel = HOUREVAL.load_members({"mlvu": tmp_path})
    # the rule: the 1200 s question of each of the four tasks; plotQA, ego and topic_reasoning are never read
    assert [q.qid for q in qs] == [f"mlvu/{t}_0" for t in MLVU_TYPES.values()]
    assert [q.video for q in qs] == [str(tmp_path / "video" / MLVU_FILES[s] / f"{MLVU_FILES[s]}_0.mp4")
                                     for s in MLVU_TYPES]
    assert sel["members"]["mlvu"]["in_file"] == 8 and sel["members"]["mlvu"]["source"] == "duration rule on json"
    _write_mlvu(tmp_path, "filtered_json", durations=(60, 30))  # the release's filtered folder: taken as is
    qs2, sel2 = HOUREVAL.load_members({"mlvu": tmp_path})
    assert [q.qid for q in qs2] == [f"mlvu/{t}_{i}" for t in MLVU_TYPES.values() for i in (0, 1)]
    assert sel2["members"]["mlvu"]["source"] == "filtered file filtered_json"
    (tmp_path / "filtered_json" / "5_order.json").unlink()
    with pytest.raises(AnnotationError, match="missing MLVU task file.*5_order.json"):
        HOUREVAL.load_members({"mlvu": tmp_path})


def test_release_settings_are_section_8_for_every_member() -> None:
    s = HOUREVAL.protocol_settings("release")
    assert (s.frames, s.sampler, s.longest_edge, s.shortest_edge, s.subtitles) == (512, "linspace", 480, 256, False)
    assert s.generation_kwargs() == {"max_new_tokens": 512, "do_sample": False} and s.top_p == 0.9
    parts = HOUREVAL.parts()
    assert list(parts) == ["videomme", "mlvu", "longvideobench"]
    assert all(p.protocol_settings("release") == s for p in parts.values())
    assert [parts[m].protocol_settings("official").sampler for m in parts] == ["videomme", "linspace", "longvideobench"]
    with pytest.raises(ValueError, match="each member"):
        HOUREVAL.protocol_settings("official")
    assert Settings(512) == s


# ----------------------------------------------------------------------------------------------------------------
# Aggregation


def _rec(qid: str, letter: str | None, answer: str, cats: dict | None = None, **kw) -> dict:
    return {"qid": qid, "letter": letter, "answer": answer, "categories": cats or {}, "error": None, "num_options": 4,
            **kw}


def test_pooled_over_questions_not_the_mean_of_members() -> None:
    records = [_rec("videomme/1", "A", "A"), _rec("videomme/2", None, "B"), _rec("videomme/3", "C", "D"),
               _rec("mlvu/findNeedle_0", "A", "A", {"question_type": ["findNeedle"]}),
               _rec("mlvu/count_0", "B", "A", {"question_type": ["count"]}),
               _rec("mlvu/count_1", "B", "A", {"question_type": ["count"]}),
               _rec("mlvu/count_2", "A", "A", {"question_type": ["count"]})]
    rel = HOUREVAL.aggregate(records, "release")
    assert rel["overall"] == {"accuracy": pytest.approx(300 / 7), "correct": 3, "total": 7}
    assert rel["headline"] == pytest.approx(300 / 7) != pytest.approx((100 / 3 + 50) / 2)  # not the member mean
    assert rel["groups"]["member"]["videomme"]["total"] == 3 and "longvideobench" not in rel["members"]
    off = HOUREVAL.aggregate(records, "official")
    # Video-MME's official rule leaves the unparsed reply out; MLVU's headline is M-Avg over its tasks
    assert off["members"]["videomme"]["overall"]["total"] == 2
    assert off["members"]["mlvu"]["headline"] == pytest.approx((100 + 100 / 3) / 2)
    assert off["overall"] == {"accuracy": pytest.approx(100 * 3 / 6), "correct": 3, "total": 6}
    assert off["unparsed"] == 1 and off["rule"].startswith("each member's own official")
    with pytest.raises(ValueError, match="names no HourEval member"):
        HOUREVAL.aggregate([_rec("x1", "A", "A")], "release")


# ----------------------------------------------------------------------------------------------------------------
# Runs: tiny random weights, generated videos


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from transformers import Qwen2VLForConditionalGeneration

    from vamba import from_qwen2vl
    from vamba.data.processor import VambaProcessor
    from vamba.modeling.tiny import tiny_qwen2vl_config

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ckpt") / "vamba"
    qwen = Qwen2VLForConditionalGeneration(tiny_qwen2vl_config(vision={"patch_size": 14}))
    from_qwen2vl(qwen, mixer_config={"d_state": 16, "headdim": 16, "chunk_size": 64}).save_pretrained(out)
    VambaProcessor.tiny(patch_size=14).save_pretrained(out)
    return out


VIDEOMME_ROWS = [  # invented questions in the parquet's schema: two on a long video, one on a short one
    {"video_id": "901", "duration": "long", "domain": "Sports", "sub_category": "Football", "url": "", "videoID": "vL",
     "question_id": "901-1", "task_type": "Counting Problem", "question": "How many shapes move?",
     "options": ["A. 1.", "B. 2.", "C. 3.", "D. 4."], "answer": "B"},
    {"video_id": "901", "duration": "long", "domain": "Sports", "sub_category": "Football", "url": "", "videoID": "vL",
     "question_id": "901-2", "task_type": "Object Recognition", "question": "Which colour is first?",
     "options": ["A. red.", "B. green.", "C. blue.", "D. grey."], "answer": "A"},
    {"video_id": "001", "duration": "short", "domain": "Sports", "sub_category": "Football", "url": "",
     "videoID": "vS", "question_id": "001-1", "task_type": "Counting Problem", "question": "How many?",
     "options": ["A. 1.", "B. 2.", "C. 3.", "D. 4."], "answer": "C"}]


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> dict[str, Path]:
    """One data folder per member in its own layout, with generated videos for every selected question."""
    root = tmp_path_factory.mktemp("houreval")
    vm, mlvu, lvb = root / "videomme", root / "mlvu", root / "lvb"
    _parquet(vm / "videomme" / "test-00000-of-00001.parquet", VIDEOMME_ROWS)
    for vid in ("vL", "vS"):
        _video(vm / "data" / f"{vid}.mp4")
    _write_mlvu(mlvu)
    for stem in MLVU_TYPES:
        _video(mlvu / "video" / MLVU_FILES[stem] / f"{MLVU_FILES[stem]}_0.mp4")
    for r in _json(LVB_SAMPLE):
        if r["duration"] > 900:
            _video(lvb / "videos" / r["video_path"])
    return {"videomme": vm, "mlvu": mlvu, "longvideobench": lvb}


def _args(checkpoint: Path, members: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["eval", "benchmark=houreval", f"model.path={checkpoint}", f"output_dir={out}", "frames.count=4",
            "max_new_tokens=2", *(f"data_dirs.{m}={d}" for m, d in members.items()),
            f"annotations.longvideobench={LVB_SAMPLE}", *extra]


def _run(checkpoint: Path, members: dict[str, Path], out: Path, *extra: str) -> dict:
    assert main(_args(checkpoint, members, out, *extra)) == 0
    return json.loads((out / "summary.json").read_text())


def _rows(out: Path) -> dict[str, dict]:
    return {r["qid"]: r for p in sorted(out.glob("results*.jsonl")) for r in read_results(p)}


@pytest.fixture(scope="module")
def official(checkpoint, members, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("official")
    _run(checkpoint, members, out)
    return out


def test_release_run_reports_members_and_the_pooled_figure(checkpoint, members, tmp_path, capsys) -> None:
    summary = _run(checkpoint, members, tmp_path, "protocol=release")
    assert "houreval subsets" in capsys.readouterr().out  # printed at start-up
    rows = _rows(tmp_path)
    lvb_ids = [r["id"] for r in _json(LVB_SAMPLE) if r["duration"] > 900]
    assert set(rows) == {"videomme/901-1", "videomme/901-2", *(f"mlvu/{t}_0" for t in MLVU_TYPES.values()),
                         *(f"longvideobench/{i}" for i in lvb_ids)}
    # pooled over every question of the three members (docs/protocols.md §8), each member pooled
    assert summary["overall"] == {"accuracy": pytest.approx(100 * sum(r["correct"] for r in rows.values()) / len(rows)),
                                  "correct": sum(r["correct"] for r in rows.values()), "total": len(rows)}
    assert {m: b["overall"]["total"] for m, b in summary["members"].items()} == {"videomme": 2, "mlvu": 4,
                                                                                 "longvideobench": len(lvb_ids)}
    # each member's release prompt (§3, §4, §5), the video first, the default system prompt, no priming
    frame = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
             "<|vision_start|><|vision_end|>")
    assert rows["videomme/901-1"]["prompt"] == (f"{frame}{HEAD}\n{RESPOND4}\nHow many shapes move?\nA. 1. B. 2. C. 3. "
                                                "D. 4.<|im_end|>\n<|im_start|>assistant\n")
    assert rows["mlvu/count_0"]["prompt"] == (f"{frame}{HEAD} {RESPOND4}\nWhich colour is shown at step 1?\n"
                                              "A. red\nB. green\nC. blue\nD. red<|im_end|>\n<|im_start|>assistant\n")
    assert rows["mlvu/count_0"]["answer"] == "A"  # the release's gold: the FIRST equal candidate
    lvb = rows[f"longvideobench/{lvb_ids[0]}"]["prompt"]
    assert lvb.startswith(f"{frame}{HEAD} {RESPOND4}\n") and "Best Option" not in lvb
    meta = summary["meta"]
    assert {m: (s["sampler"], s["longest_edge"]) for m, s in meta["member_settings"].items()} == {
        m: ("linspace", 480) for m in ("videomme", "mlvu", "longvideobench")}
    assert meta["selection"]["members"]["videomme"]["questions"] == 2 and meta["selection"]["questions"] == len(rows)
    report = (tmp_path / "report.md").read_text()
    assert "houreval subsets" in report and "| videomme | duration rule on videomme/test-00000-of-00001.parquet | 2 |" \
        in report and "## Members" in report and "mlvu by question_type" in report
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_official_run_scores_each_member_as_the_member_itself(checkpoint, members, official, tmp_path) -> None:
    summary = json.loads((official / "summary.json").read_text())
    rows = _rows(official)
    assert summary["protocol"] == "official" and set(summary["members"]) == {"videomme", "mlvu", "longvideobench"}
    assert summary["overall"]["total"] == sum(b["overall"]["total"] for b in summary["members"].values())
    assert summary["overall"]["correct"] == sum(b["overall"]["correct"] for b in summary["members"].values())
    settings = summary["meta"]["member_settings"]
    assert [settings[m]["sampler"] for m in ("videomme", "mlvu", "longvideobench")] == ["videomme", "linspace",
                                                                                       "longvideobench"]
    assert settings["mlvu"]["system_prompt"] == MLVU_SYSTEM and settings["mlvu"]["response_prefix"] == "Best Option: ("
    assert rows["mlvu/count_0"]["prompt"].endswith("Only give the best option.<|im_end|>\n<|im_start|>assistant\n"
                                                   "Best Option: (")
    assert rows["mlvu/count_0"]["answer"] == "D"  # the official gold: the LAST equal candidate
    assert rows["videomme/901-1"]["prompt"].endswith("D. 4.\nThe best answer is:<|im_end|>\n<|im_start|>assistant\n")
    # LongVideoBench alone, on the same subset: the same replies, letters and aggregate (its seeded random draws)
    lvb_rows = [r for r in _json(LVB_SAMPLE) if r["duration"] > 900]
    (tmp_path / "subset.json").write_text(json.dumps(lvb_rows))
    assert main(["eval", "benchmark=longvideobench", f"model.path={checkpoint}",
                 f"data_dir={members['longvideobench']}", f"annotation={tmp_path / 'subset.json'}",
                 f"output_dir={tmp_path / 'alone'}", "frames.count=4", "max_new_tokens=2"]) == 0
    alone = _rows(tmp_path / "alone")
    assert alone and all((rows[f"longvideobench/{q}"]["response"], rows[f"longvideobench/{q}"]["letter"])
                         == (r["response"], r["letter"]) for q, r in alone.items())
    member = summary["members"]["longvideobench"]
    alone_summary = json.loads((tmp_path / "alone" / "summary.json").read_text())
    assert (member["overall"], member["headline"]) == (alone_summary["overall"], alone_summary["headline"])


def test_resume_and_a_changed_subset(checkpoint, members, official, tmp_path) -> None:
    full = json.loads((official / "summary.json").read_text())
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copy(official / "run.json", out / "run.json")
    lines = (official / "results.jsonl").read_bytes().split(b"\n")
    (out / "results.jsonl").write_bytes(b"\n".join(lines[:5]) + b"\n" + lines[5][:20])  # killed mid-write
    resumed = _run(checkpoint, members, out)
    assert sorted(r["qid"] for r in read_results(out / "results.jsonl")) == sorted(_rows(official))
    for key in ("headline", "overall", "groups", "members"):
        assert resumed[key] == full[key]
    # another HourEval (the release's filtered Video-MME file appears) is never mixed into these results
    vm = tmp_path / "vm"
    shutil.copytree(members["videomme"], vm)
    _parquet(vm / "videomme" / "test-00000-of-00001-filtered.parquet", VIDEOMME_ROWS)
    with pytest.raises(ValueError, match="selection"):
        main(_args(checkpoint, {**members, "videomme": vm}, out))


@pytest.mark.multiprocess
def test_torchrun_shards_and_merges_one_report(checkpoint, members, official, tmp_path) -> None:
    out = tmp_path / "dist"
    run_torchrun(["-m", "vamba.cli", *_args(checkpoint, members, out)])
    assert sorted(p.name for p in out.glob("results*.jsonl")) == ["results.rank0.jsonl", "results.rank1.jsonl"]
    assert all(read_results(p) for p in out.glob("results*.jsonl"))
    merged = json.loads((out / "summary.json").read_text())
    single = json.loads((official / "summary.json").read_text())
    for key in ("headline", "overall", "groups", "members"):
        assert merged[key] == single[key]


# ----------------------------------------------------------------------------------------------------------------
# Configuration


def test_config_errors_and_partial_dry_run(members, tmp_path, capsys) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        main(["eval", "benchmark=houreval", "data_dirs.egoschema=/x", "dry_run=true"])
    with pytest.raises(ValueError, match="data_dirs.videomme=<folder> data_dirs.mlvu=<folder>"):
        main(["eval", "benchmark=houreval", "dry_run=true"])
    with pytest.raises(ValueError, match="one data folder per member"):
        main(["eval", "benchmark=houreval", f"data_dir={tmp_path}", "dry_run=true"])
    with pytest.raises(ValueError, match="benchmark=videomme reads data_dir"):
        main(["eval", "benchmark=videomme", f"data_dirs.videomme={tmp_path}", "dry_run=true"])
    with pytest.raises(ValueError, match="benchmark=videomme needs data_dir"):
        main(["eval", "benchmark=videomme", "dry_run=true"])
    with pytest.raises(ValueError, match="egoschema not a member"):
        main(["eval", "benchmark=houreval", "members=[egoschema]", "dry_run=true"])
    with pytest.raises(ValueError, match="leaves out"):
        main(["eval", "benchmark=houreval", "members=[videomme]", *(f"data_dirs.{m}={d}" for m, d in members.items()),
              "dry_run=true"])
    capsys.readouterr()
    assert main(["eval", "benchmark=houreval", "members=[videomme]", f"data_dirs.videomme={members['videomme']}",
                 "dry_run=true"]) == 0  # no model needed
    printed = capsys.readouterr().out
    assert "PARTIAL: members left out (members=...): mlvu, longvideobench" in printed
    assert "dry run: houreval: 2 questions on 1 videos; 0 records failed to load; 0 videos not found" in printed
