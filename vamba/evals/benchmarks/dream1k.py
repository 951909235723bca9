"""DREAM-1K detailed video captioning (Tarsier2), scored by AutoDQ exactly as the official scorer (`vamba.evals.autodq`).

Annotation `DREAM-1k.jsonl` (`bytedance/tarsier`, Apache-2.0; `../shared/benchmarks/CAPTIONING.md` §2), in either
format: current rows (`messages`: the user turn's text is the prompt, the assistant turn's `reference` the human
description) or the older rows (`text.prompt` without its `<video>\\n`, `text.response`; two sources named
`DREAM/stock` and `DREAM/shorts` there, kept as written); both carry `dataset` (`DREAM/<source>`, five sources),
`idx`, `vid` and `extra_info` (`events`, `n_subjects`, `n_shots`, `n_events`). A
row's id is the official `<dataset>_<idx>`; its video is `<data_dir>/<vid>.mp4` (the gated `omni-research/DREAM-1K`
archive, unzipped flat).

Generation: the row's prompt ("Describe the video in detail."), greedy, 512 new tokens. `official` reads frames as
Tarsier2 (16 uniform frames including the first and last) at the processor's own size; `release` uses the release's
evaluation defaults (512 frames, its sampler and 480 px edge pre-resize): our choice, as the paper gives no DREAM-1K
settings. A video that cannot be read is an error row whose caption is "<error>", which the official inference
script writes and its scorer scores. Outputs besides the report: `predictions/predictions.jsonl` in the official
prediction-record format (the annotation row with the caption in the assistant turn; the official scorer reads that
folder), and `eval_records/DREAM_eval_result.txt` / `DREAM_eval_infos.jsonl` as the official scorer writes them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from vamba.evals import autodq
from vamba.evals.benchmark import AnnotationError, Question, require
from vamba.evals.benchmarks.captions import VIDEO_PROMPT, Captions, write_atomic
from vamba.evals.judge import Judge
from vamba.evals.protocol import Settings


def _texts(row: dict[str, Any], role: str, key: str) -> str:
    return "".join(c.get(key) or "" for m in row["messages"] if m["role"] == role for c in m["content"]
                   if c["type"] == "text")


class Dream1K(Captions):
    name = "dream1k"
    default_annotation = "DREAM-1k.jsonl"
    settings = {"official": Settings(16, sampler="tarsier", longest_edge=None), "release": Settings(512)}
    metric = "AutoDQ F1"
    judge_preset = autodq.JUDGE
    official_rule_text = ("AutoDQ (bytedance/tarsier evaluate_dream_gpt.py): events extracted and entailment-judged "
                          "by the judge, re-asked up to 10 times; failed videos excluded and counted; per-source F1 "
                          "from averaged recall and precision, OVERALL from the mean of the five sources")
    release_note = ("the release's evaluation defaults for frames (512, its sampler, 480 px pre-resize), our choice: "
                    "the paper gives no DREAM-1K settings")

    def _question(self, row: dict[str, Any], where: str) -> Question:
        require(row, ("dataset", "idx", "vid"), where)
        if not str(row["dataset"]).startswith("DREAM/"):
            raise AnnotationError(f"{where}: field 'dataset' {row['dataset']!r} is not a DREAM source")
        if "messages" in row:
            prompt, reference = _texts(row, "user", "text"), _texts(row, "assistant", "reference")
        else:
            require(row, ("text",), where)
            prompt, reference = str(row["text"].get("prompt") or "").removeprefix("<video>\n"), row["text"].get("response")
        if not isinstance(reference, str) or not reference.strip():
            raise AnnotationError(f"{where}: no reference description (assistant 'reference' / text.response)")
        info = row.get("extra_info") or {}
        events = info.get("events")
        if isinstance(events, list) and not all(isinstance(e, str) for e in events):
            raise AnnotationError(f"{where}: extra_info.events must be a list of strings")
        return Question(qid=f"{row['dataset']}_{row['idx']}", video=f"{row['vid']}.mp4", question=prompt or VIDEO_PROMPT,
                        options=[], answer=None, categories={"source": [row["dataset"]]},
                        extra={"image": False, "references": [reference], "events": events, "extra_info": info,
                               "row": row})

    def prepare(self, cfg: Any, judge: Judge) -> dict[str, Any]:
        return {}

    @staticmethod
    def prediction_record(q: Question, caption: str) -> dict[str, Any]:
        """The official prediction record: the annotation row with the caption in the assistant turn (an old-format
        row is written in the current format, which the current scorer reads)."""
        row = q.extra["row"]
        if "messages" not in row:
            row = {"messages": [
                {"role": "user", "content": [{"type": "video", "video": {"video_file": row.get("video_file")}},
                                             {"type": "text", "text": q.question}]},
                {"role": "assistant", "content": [{"type": "text", "text": "", "reference": q.extra["references"][0]}]}],
                **{k: row[k] for k in ("dataset", "idx", "vid", "extra_info") if k in row}, "task": "video/caption"}
        row = copy.deepcopy(row)
        if row["messages"][-1]["role"] == "assistant":  # `put_pred_to_data_dict`
            row["messages"][-1]["content"][-1]["text"] = caption
        else:
            row["messages"].append({"role": "assistant", "content": [{"type": "text", "text": caption}]})
        return row

    def score(self, judge: Judge, ctx: dict[str, Any], data_dir: Path, records: list, by_id: dict[str, Question],
              out: Path, protocol: str) -> dict[str, Any]:
        samples, predictions = [], []
        for r in records:
            q = by_id.get(r["qid"])
            if q is None or q.error:  # a record that did not load has no reference to score against
                continue
            caption = "<error>" if r.get("error") else r["response"]
            predictions.append(json.dumps(self.prediction_record(q, caption), ensure_ascii=False) + "\n")
            samples.append({"idx": q.qid, "dataset": q.categories["source"][0], "reference": q.extra["references"][0],
                            "prediction": caption, "events": q.extra["events"], "extra_info": q.extra["extra_info"]})
        write_atomic(out / "predictions" / "predictions.jsonl", "".join(predictions))
        if not judge.configured:
            return self.summary(judge, records, protocol, None, [])
        results = judge.map(lambda s: autodq.score_video(judge, s), samples)
        tables = autodq.aggregate(results)
        lines = autodq.table_lines(tables)
        order = {s: i for i, s in enumerate(sorted(tables["sources"]))}
        infos = [r["info"] for r in sorted(results, key=lambda r: order.get(r["dataset"], -1)) if r["success"]]
        write_atomic(out / "eval_records" / "DREAM_eval_result.txt", "\n".join(lines) + "\n")
        write_atomic(out / "eval_records" / "DREAM_eval_infos.jsonl", "".join(json.dumps(i) + "\n" for i in infos))
        f1 = tables["overall"]["f1"] * 100
        failed = [f"- `{r['idx']}`: {r['error']}" for r in results if not r["success"]]
        head = [f"**AutoDQ F1 x100: {f1:.1f}** (R {tables['overall']['recall'] * 100:.1f}, P "
                f"{tables['overall']['precision'] * 100:.1f}); paper Table 5: Vamba 28.1, Qwen2-VL-7B 29.6", "",
                f"Generation errors (scored as \"<error>\", as the official inference writes them): "
                f"{sum(bool(r.get('error')) for r in records)}", ""]
        return self.summary(judge, records, protocol, f1, [*head, *lines, *(["", "Failed videos:", *failed[:20]]
                                                                              if failed else [])], autodq=tables)


BENCHMARK = Dream1K()
