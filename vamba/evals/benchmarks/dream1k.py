"""DREAM-1K detailed video captioning (Tarsier2), scored by AutoDQ as the official scorer (`vamba.evals.autodq`).

`DREAM-1k.jsonl` (bytedance/tarsier, Apache-2.0; docs/captioning.md §2), current rows (`messages`: user text = prompt,
assistant `reference` = description) or older ones (`text.prompt` less `<video>\\n`, `text.response`; sources
`DREAM/stock`, `DREAM/shorts` there, kept), with `dataset`, `idx`, `vid`, `extra_info` (`events`, `n_subjects`,
`n_shots`, `n_events`). Id `<dataset>_<idx>`; video `<data_dir>/<vid>.mp4` (`omni-research/DREAM-1K`, unzipped flat).
Greedy, 512 new tokens; `official`: 16 frames as Tarsier2 (first and last included) at the processor's size;
`release`: the release's eval defaults (512 frames, 480 px pre-resize), our choice as the paper gives none. An
unreadable video is an error row captioned "<error>", as the official inference writes and its scorer scores. Also
written: `predictions/predictions.jsonl` (official prediction records: the row with the caption in the assistant
turn; the official scorer reads that folder) and `eval_records/DREAM_eval_result.txt` / `DREAM_eval_infos.jsonl`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from vamba.evals import autodq
from vamba.evals.benchmark import AnnotationError, Question, require
from vamba.evals.benchmarks.captions import VIDEO_PROMPT, Captions
from vamba.evals.judge import Judge
from vamba.evals.protocol import Settings
from vamba.evals.report import atomic_write


def _texts(row: dict[str, Any], role: str, key: str) -> str:
    return "".join(c.get(key) or "" for m in row["messages"] if m["role"] == role for c in m["content"]
                   if c["type"] == "text")


class Dream1K(Captions):
    name = "dream1k"
    default_annotation = "DREAM-1k.jsonl"
    settings = {"official": Settings(16, sampler="tarsier", longest_edge=None), "release": Settings(512)}
    metric = "AutoDQ F1"
    judge_preset = autodq.JUDGE
    official_rule_text = ("AutoDQ (bytedance/tarsier evaluate_dream_gpt.py): judged events, re-asked up to 10 times, "
                          "failed videos excluded and counted; F1 per source from mean R and P, OVERALL from theirs")
    release_note = "the release's eval defaults (512 frames, 480 px pre-resize), our choice: the paper gives none"

    def _question(self, row: dict[str, Any], where: str) -> Question:
        require(row, ("dataset", "idx", "vid"), where)
        if not str(row["dataset"]).startswith("DREAM/"):
            raise AnnotationError(f"{where}: field 'dataset' {row['dataset']!r} is not a DREAM source")
        if "messages" in row:
            prompt, reference = _texts(row, "user", "text"), _texts(row, "assistant", "reference")
        else:
            require(row, ("text",), where)
            text = row["text"]
            prompt, reference = str(text.get("prompt") or "").removeprefix("<video>\n"), text.get("response")
        if not isinstance(reference, str) or not reference.strip():
            raise AnnotationError(f"{where}: no reference description (assistant 'reference' / text.response)")
        info = row.get("extra_info") or {}
        events = info.get("events")
        if isinstance(events, list) and not all(isinstance(e, str) for e in events):
            raise AnnotationError(f"{where}: extra_info.events must be a list of strings")
        return Question(qid=f"{row['dataset']}_{row['idx']}", video=f"{row['vid']}.mp4",
                        question=prompt or VIDEO_PROMPT, options=[], answer=None,
                        categories={"source": [row["dataset"]]},
                        extra={"image": False, "references": [reference], "events": events, "extra_info": info,
                               "row": row})

    def prepare(self, cfg: Any, judge: Judge) -> dict[str, Any]:
        return {}

    @staticmethod
    def prediction_record(q: Question, caption: str) -> dict[str, Any]:
        """The official prediction record: the annotation row with the caption in the assistant turn (an old-format
        row gains the current `messages`, which the current scorer reads)."""
        row = copy.deepcopy(q.extra["row"])
        row.setdefault("messages", [
            {"role": "user", "content": [{"type": "video", "video": {"video_file": row.get("video_file")}},
                                         {"type": "text", "text": q.question}]},
            {"role": "assistant", "content": [{"type": "text", "text": "", "reference": q.extra["references"][0]}]}])
        row["messages"][-1]["content"][-1]["text"] = caption  # `put_pred_to_data_dict`
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
        atomic_write(out / "predictions" / "predictions.jsonl", "".join(predictions))
        if not judge.configured:
            return self.summary(judge, records, protocol, None, [])
        results = judge.map(lambda s: autodq.score_video(judge, s), samples)
        tables = autodq.aggregate(results)
        lines, o = autodq.table_lines(tables), tables["overall"]
        atomic_write(out / "eval_records" / "DREAM_eval_result.txt", "\n".join(lines) + "\n")
        atomic_write(out / "eval_records" / "DREAM_eval_infos.jsonl",  # annotation order: sources sorted, as there
                     "".join(json.dumps(r["info"]) + "\n" for r in results if r["success"]))
        failed = [f"- `{r['idx']}`: {r['error']}" for r in results if not r["success"]][:20]
        head = [f"**AutoDQ F1 x100: {o['f1'] * 100:.1f}** (R {o['recall'] * 100:.1f}, P {o['precision'] * 100:.1f}); "
                "paper Table 5: Vamba 28.1, Qwen2-VL-7B 29.6", "", "Generation errors (captioned \"<error>\", as the "
                f"official inference writes them, and scored): {sum(bool(r.get('error')) for r in records)}", ""]
        return self.summary(judge, records, protocol, o["f1"] * 100,
                            [*head, *lines, *(["", "Failed videos:", *failed] if failed else [])], autodq=tables)


BENCHMARK = Dream1K()
