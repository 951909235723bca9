"""The lmms-eval lane (scripts/test_lmms.sh, in its own venv with the `lmms` extra): lmms-eval itself finds our plugin
through its entry point and runs `lmms-eval --model vamba` on a local task (`task_utils.py`: the synthetic
benchmark's questions as a JSON dataset of generated videos, scored by lmms-eval's own extractor), offline, with one
process and with two under torchrun (gloo, CPU). Its results file must give the score `vamba eval` gives on the same
questions, whose prompts and replies must coincide."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("lmms_eval", reason="optional extra `lmms` not installed (scripts/test_lmms.sh installs it)")

TASK = "synthetic_lmms"  # "synthetic": `protocol=...` finds the benchmark by the task name's first word
HERE = Path(__file__).resolve().parent
YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: generate_until
doc_to_visual: !function task_utils.doc_to_visual
doc_to_text: !function task_utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 16
  temperature: 0
  do_sample: false
  until: ["<|im_end|>"]
process_results: !function task_utils.process_results
metric_list:
  - metric: synthetic_score
    aggregation: mean
    higher_is_better: true
"""


class LmmsEval:
    """`lmms-eval --model vamba ...` (under torchrun for nproc > 1), offline, started in its own process group so
    that a hung run is killed whole; `result()` waits for it and reads its results file and logged samples."""

    def __init__(self, root: Path, out: Path, nproc: int, model_args: str):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled",
               "HF_HOME": str(root / f"hf{nproc}"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1"}
        args = ["--model", "vamba", "--model_args", f"pretrained={root / 'ckpt'},max_num_frames=8{model_args}",
                "--tasks", TASK, "--include_path", str(root / "task"), "--batch_size", "1", "--output_path", str(out),
                "--log_samples"]
        if nproc == 1:
            cmd = [str(Path(sys.executable).parent / "lmms-eval"), *args]
        else:
            with socket.socket() as s:  # a free port
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                   "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "lmms_eval", *args]
        self.nproc, self.out = nproc, out
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     cwd=root, start_new_session=True)

    def result(self, timeout: float = 480) -> SimpleNamespace:
        try:
            log = self.proc.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"lmms-eval ({self.nproc} processes) ran past {timeout} s") from None
        files = sorted(self.out.glob("*/*_results.json")), sorted(self.out.glob(f"*/*_samples_{TASK}.jsonl"))
        # lmms-eval logs an error during evaluation and still exits 0: no results file is the failure then
        assert self.proc.returncode == 0 and all(files), f"lmms-eval ({self.nproc} processes) failed:\n{log[-6000:]}"
        results = json.loads(files[0][0].read_text())["results"][TASK]
        samples = [json.loads(x) for x in files[1][0].read_text().splitlines()]
        return SimpleNamespace(score=results["synthetic_score,none"], log=log,
                               samples=sorted(samples, key=lambda s: s["doc_id"]))

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.communicate()


@pytest.fixture(scope="module")
def lane(tmp_path_factory):
    """A tiny Vamba checkpoint, 4 generated 8-frame videos with 2 questions each and the task folder; lmms-eval
    started on them with one process and with two (`protocol=official` there: the synthetic benchmark's official
    frames, segment middles without pre-resize, i.e. still those of `max_num_frames=8` alone), and meanwhile
    `vamba eval benchmark=synthetic frames.count=8` (16 new tokens, as the task) on the same questions."""
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    from vamba import from_qwen2vl
    from vamba.cli import main
    from vamba.data.processor import VambaProcessor
    from vamba.data.synthetic import SyntheticConfig, generate
    from vamba.evals.results import read_results
    from vamba.modeling.tiny import tiny_qwen2vl_config

    root = tmp_path_factory.mktemp("lmms")
    torch.manual_seed(0)
    qwen = Qwen2VLForConditionalGeneration(tiny_qwen2vl_config(vision={"patch_size": 14}))
    from_qwen2vl(qwen, mixer_config={"d_state": 16, "headdim": 16, "chunk_size": 64}).save_pretrained(root / "ckpt")
    VambaProcessor.tiny(patch_size=14).save_pretrained(root / "ckpt")
    # Data seed 1: this random model's replies then score 2 of 8, so equal scores say something.
    generate(root / "data", SyntheticConfig(train_videos=0, eval_videos=4, questions_per_video=2, num_frames=8,
                                            num_images=0, seed=1))
    docs = [{"uid": str(qa["uid"]), "video": str(root / "data" / "videos" / f"{row['key']}.mp4"),
             "question": qa["question"], "answer": qa["answer"]}
            for line in (root / "data" / "video_info.meta.jsonl").read_text().splitlines()
            for row in [json.loads(line)] for qa in row["qa"]]
    (root / "task").mkdir()
    (root / "task" / "docs.json").write_text(json.dumps(docs))
    shutil.copy(HERE / "task_utils.py", root / "task" / "task_utils.py")
    (root / "task" / f"{TASK}.yaml").write_text(YAML.format(task=TASK, docs=root / "task" / "docs.json"))
    runs = {1: LmmsEval(root, root / "one", 1, ""), 2: LmmsEval(root, root / "two", 2, ",protocol=official")}
    try:
        assert main(["eval", "benchmark=synthetic", f"model.path={root / 'ckpt'}", f"data_dir={root / 'data'}",
                     "frames.count=8", f"output_dir={root / 'ours'}"]) == 0
        ours = {r["qid"]: r for r in read_results(root / "ours" / "results.jsonl")}
        summary = json.loads((root / "ours" / "summary.json").read_text())["overall"]
        assert 0 < summary["correct"] < summary["total"] == len(docs), f"pick another data seed: {summary}"
        yield SimpleNamespace(docs=docs, ours=ours, summary=summary, runs=runs)
    finally:
        for run in runs.values():
            run.kill()


@pytest.fixture(scope="module")
def one_process(lane) -> SimpleNamespace:
    return lane.runs[1].result()


def test_lmms_eval_resolves_vamba_to_our_class(lane):  # `lane`: lmms-eval runs meanwhile (imports overlap)
    from lmms_eval.models import get_model

    from vamba.evals.lmms_eval_adapter import Vamba

    assert get_model("vamba") is Vamba


def test_one_process_scores_as_vamba_eval_on_the_same_prompts_and_replies(lane, one_process):
    assert [s["doc_id"] for s in one_process.samples] == list(range(len(lane.docs)))
    for s in one_process.samples:
        ours = lane.ours[lane.docs[s["doc_id"]]["uid"]]
        # the same user text after the video, and (greedy, same frames) the same reply
        assert f"<|vision_start|><|vision_end|>{s['input']}<|im_end|>" in ours["prompt"]
        assert s["filtered_resps"] == ours["response"], (s["doc_id"], s["filtered_resps"], ours["response"])
        assert s["synthetic_score"] == float(ours["correct"]), (s["filtered_resps"], ours["letter"], s["target"])
    assert one_process.score * 100 == pytest.approx(lane.summary["accuracy"])


def test_two_processes_under_torchrun_score_as_one(lane, one_process):
    """Documents sharded over two ranks (gloo on CPU), gathered on rank 0: the same replies and score."""
    two = lane.runs[2].result()
    assert "Building contexts for synthetic_lmms on rank 1" in two.log
    assert [s["filtered_resps"] for s in two.samples] == [s["filtered_resps"] for s in one_process.samples]
    assert two.score == one_process.score
