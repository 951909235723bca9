"""Our AutoDQ and G-VEval against the official code, both talking to the same local judge (tests/judge_server.py).

    python scripts/caption_oracle.py --tarsier <checkout of bytedance/tarsier> --gveval <checkout of ztangaj/gveval> \
        --official-python <python with: openai pathos func-timeout prettytable pandas opencv-python-headless
                           python-dotenv>

AutoDQ: 1,000 DREAM-1K rows (the annotation file of the Tarsier checkout) get made-up captions (some failing on
purpose, some "<error>"), which `vamba.evals.benchmarks.dream1k` scores and writes as official prediction records;
the official `evaluate_dream_gpt.py` (unmodified; its package `__init__` reduced to that metric) scores those
records; the result tables and every per-video record must be equal. G-VEval: the official `Scorer.gveval` and ours
score an image (combined), a video (ref-only, ACCR) and a text-only case; the requests the judge receives must be
equal (the video picture: frames within 1 grey level, the label font differs) and so must the scores.
Needs network for nothing; the official code runs in the other interpreter, as a subprocess.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from judge_server import JudgeServer  # noqa: E402

from vamba.evals import autodq, gveval  # noqa: E402
from vamba.evals.benchmarks import get_benchmark  # noqa: E402
from vamba.evals.judge import Judge, JudgeConfig  # noqa: E402

AUTODQ_RUN = """import sys
sys.path.insert(0, {stage!r})
import evaluation.metrics.evaluate_dream_gpt as edg
from evaluation.evaluate import read_dataset
metric = edg.DREAMGPTMetric(dataset_name="DREAM")
metric.num_worker = 4
metric.process(read_dataset({pred!r}, "DREAM"))
metric.summarize_metric(); metric.save_results({pred!r}); metric.save_eval_infos({pred!r})
"""
GVEVAL_RUN = """import asyncio, json, os, sys
sys.path.insert(0, {root!r}); os.chdir({out!r})
from evaluation.gveval.scorer import Scorer
pred, refs, ex = {pred!r}, {refs!r}, {root!r} + "/example/"
for args in ((ex + "sample_image.jpg", "img", "combined", False), (ex + "video1.mp4", "vid", "ref-only", True),
             (None, "img", "ref-only", False)):
    print(json.dumps(asyncio.run(Scorer().gveval([pred], refs, args[0], args[1], args[2], args[3]))))
"""
PRED, REFS = "A man is playing a guitar.", ["A person is playing a musical instrument.", "A man is strumming a guitar."]


def autodq_check(args, server: JudgeServer, out: Path) -> None:
    stage = out / "tarsier"
    for f in ("evaluation/evaluate.py", "evaluation/metrics/evaluate_dream_gpt.py", "tools/gpt_api.py",
              "tools/rw_utils.py"):
        (stage / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(args.tarsier) / f, stage / f)
    text = (stage / "evaluation/evaluate.py").read_text()  # only read_dataset / extract_item_for_eval are used
    (stage / "evaluation/evaluate.py").write_text("\n".join(
        line for line in text.split("METRIC_MAPPING")[0].splitlines() if not line.startswith(("from .", "from dataset",
                                                                                       "from tools.color"))))
    (stage / "evaluation/metrics/__init__.py").write_text("from .evaluate_dream_gpt import DREAMGPTMetric\n")
    for f in ("evaluation/__init__.py", "tools/__init__.py"):
        (stage / f).write_text("")
    bench = get_benchmark("dream1k")
    qs = bench.load(Path(args.tarsier) / "data" / "annotations")
    records = []
    for i, q in enumerate(qs):  # own first sentence + the next video's description; a few unjudgeable or "<error>"
        cap = q.extra["references"][0].split(".")[0] + ". " + qs[(i + 1) % len(qs)].extra["references"][0]
        cap = cap if i % 3 else ("A static shot." if i % 2 else cap.split(".")[0] + ".")
        records.append({"qid": q.qid, "response": cap + (" The unjudgeable part." if i % 50 == 7 else ""),
                        "error": "video: missing" if i % 97 == 0 else None})
    judge = Judge(JudgeConfig(base_url=server.base_url, concurrency=8), autodq.JUDGE, "dream1k", out / "cache")
    summary = bench.score(judge, {}, Path("."), records, {q.qid: q for q in qs}, out / "ours", "official")
    pred = out / "ours" / "predictions"
    env = {**os.environ, "AZURE_ENDPOINT": server.base_url.removesuffix("/v1"), "OPENAI_API_KEY": "sk-local"}
    subprocess.run([args.official_python, "-c", AUTODQ_RUN.format(stage=str(stage), pred=str(pred))], env=env,
                   check=True, capture_output=True, cwd=stage)
    theirs = {r["idx"]: r for r in map(json.loads, (pred / "eval_records/DREAM_eval_infos.jsonl").open())}
    ours = {r["idx"]: r for r in map(json.loads, (out / "ours/eval_records/DREAM_eval_infos.jsonl").open())}
    table = (pred / "eval_records/DREAM_eval_result.txt").read_text()
    o = summary["autodq"]["overall"]
    print(table + f"ours: OVERALL F1 {round(o['f1'], 3)} R {round(o['recall'], 3)} P {round(o['precision'], 3)} "
          f"success {o['success']} failed {o['failed']}")
    same = theirs == ours and f"{round(o['f1'], 3)}" in table.splitlines()[-2]
    print(f"AutoDQ: {len(ours)} per-video records, identical to the official scorer's: {theirs == ours}")
    assert same, "AutoDQ differs from the official scorer"


def gveval_check(args, server: JudgeServer, out: Path) -> None:
    stage = out / "gveval"  # scorer.py, utils.py and prompts/ (the package __init__ imports the other metrics)
    shutil.copytree(Path(args.gveval) / "evaluation" / "gveval", stage / "evaluation" / "gveval")
    shutil.copytree(Path(args.gveval) / "example", stage / "example")
    (stage / "evaluation" / "__init__.py").write_text("")
    env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-local"}
    start = len(server.requests)
    official = subprocess.run([args.official_python, "-c", GVEVAL_RUN.format(
        root=str(stage), out=str(out), pred=PRED, refs=REFS)], env=env, check=True,
        capture_output=True, text=True).stdout.strip().splitlines()
    theirs = server.requests[start:]
    judge = Judge(JudgeConfig(base_url=server.base_url), gveval.JUDGE, "captions", out / "gv-cache")
    ex = Path(args.gveval) / "example"
    cases = [("img/combined.txt", (ex / "sample_image.jpg").read_bytes(), "low", False),
             ("vid/accr/ref-only.txt", gveval.composite(ex / "video1.mp4"), "high", True),
             ("img/ref-only.txt", None, "low", False)]
    start = len(server.requests)
    ours = [gveval.score_sample(judge, gveval.render(gveval.load_prompt(args.gveval, name), PRED, REFS), pic, detail,
                                accr) for name, pic, detail, accr in cases]
    for k, (a, b) in enumerate(zip(theirs, server.requests[start:])):
        a, b = a["body"], b["body"]
        pics = [m["content"][1]["image_url"]["url"] for m in (a["messages"][0], b["messages"][0]) if
                isinstance(m["content"], list)]
        if k == 1:  # the video picture: compare the frames, then the rest of the request
            pa, pb = (np.asarray(Image.open(io.BytesIO(base64.b64decode(u.split(",")[1])))).astype(int) for u in pics)
            print(f"video picture: frames differ by at most {np.abs(pa[:462] - pb[:462]).max()} grey levels")
            for body in (a, b):
                body["messages"][0]["content"][1]["image_url"]["url"] = "<picture>"
        score_theirs = json.loads(official[k])["final_score"]
        score_theirs = score_theirs[-1] if isinstance(score_theirs, list) else score_theirs
        print(f"G-VEval case {k}: request identical {a == b}; score official {score_theirs:.6f}, ours "
              f"{ours[k]['score']:.6f}")
        assert a == b and abs(score_theirs - ours[k]["score"]) < 1e-9


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarsier", required=True)
    parser.add_argument("--gveval", required=True)
    parser.add_argument("--official-python", required=True)
    parser.add_argument("--out", default="outputs/caption_oracle")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    server = JudgeServer()
    try:
        autodq_check(args, server, out)
        gveval_check(args, server, out)
    finally:
        server.stop()
