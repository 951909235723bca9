"""HourVideo (dev split): 50 egocentric Ego4D videos, 1,182 five-way questions in task families.

File `v1.0_release/json/dev_v1.0_annotations.json` (or `dev_v1.0_annotations.json` at the data dir root): a dict
`video_uid -> {"video_metadata", "benchmark_dataset": [MCQ]}`; an MCQ has `qid`, `task` (slash path whose first
component is the task family), `question`, `mcq_test` ("A. ..\\nB. .." lines), `answer_1`..`answer_5`,
`correct_answer_label`. Options come from `answer_1..5`, else are parsed from `mcq_test`. Question ids are
"<video_uid>/<qid>" (the file's `qid` is kept in `extra["qid"]`), unique without assuming the file's qids are.

Videos: `videos/<video_uid>.mp4`. Prompt (both protocols): the release's, with `mcq_test` verbatim; the official
grouped JSON prompt lives only in the HF dataset, so the official protocol is an analogue: one question at a time,
the reply's first character vs `correct_answer_label`, pooled. Release: 128 frames, longest edge 360, sampled
decoding (temperature 1, top_p 0.9, no top-k; no seed is set there, so runs cannot be reproduced exactly).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vamba.evals.benchmark import VAMBA_HEAD, AnnotationError, Benchmark, Question, check_unique, read_json, require
from vamba.evals.protocol import Settings

_MCQ_LINE = re.compile(r"^\s*([A-E])[.)]\s*(.*)$")


class HourVideo(Benchmark):
    name = "hourvideo"
    default_annotation = "v1.0_release/json/dev_v1.0_annotations.json"
    video_root = "videos"
    letters = "ABCDE"
    settings = {"official": Settings(128, longest_edge=360),
                "release": Settings(128, longest_edge=360, do_sample=True, temperature=1.0, top_p=0.9, top_k=0)}
    official_rule = "first_char"
    official_rule_text = ("HourVideo official (analogue): the reply's first character vs correct_answer_label; "
                          "unparsed and errors wrong; headline = correct/total over all questions (pooled)")
    release_note = ("one question per call with the whole video, text-only options for the image tasks, sampled "
                    "decoding (official baselines: grouped JSON prompts, trimmed video and option images)")

    def load(self, data_dir: Path, annotation: Path | None = None) -> list[Question]:
        path = self.annotation_path(data_dir, annotation)
        if annotation is None and not path.exists() and (Path(data_dir) / path.name).exists():
            path = Path(data_dir) / path.name
        data = read_json(path)
        if not isinstance(data, dict):
            raise AnnotationError(f"{path}: expected an object keyed by video_uid, got {type(data).__name__}")
        questions = []
        for uid, entry in data.items():
            mcqs = entry.get("benchmark_dataset") if isinstance(entry, dict) else None
            if not isinstance(mcqs, list):
                questions.append(self.broken(f"{uid}/?", f"{path} video {uid}: missing field(s) benchmark_dataset"))
                continue
            for i, mcq in enumerate(mcqs):
                where = f"{path} video {uid} question {i}"
                try:
                    questions.append(self._question(mcq, uid, entry, where))
                except AnnotationError as e:
                    qid = mcq.get("qid", f"#{i}") if isinstance(mcq, dict) else f"#{i}"
                    questions.append(self.broken(f"{uid}/{qid}", e, f"{self.video_root}/{uid}.mp4"))
        check_unique(questions, str(path))
        return questions

    def _question(self, mcq: Any, uid: str, entry: dict, where: str) -> Question:
        require(mcq, ("qid", "task", "question", "correct_answer_label"), where)
        options = self._options(mcq, where)
        answer = str(mcq["correct_answer_label"]).strip()
        if answer not in self.letters[: len(options)]:
            raise AnnotationError(f"{where}: field 'correct_answer_label' {answer!r} is not an option letter")
        task = str(mcq["task"])
        return Question(
            qid=f"{uid}/{mcq['qid']}", video=f"{self.video_root}/{uid}.mp4", question=mcq["question"],
            options=options, answer=answer, categories={"task_family": [task.split("/")[0]], "task": [task]},
            extra={"qid": mcq["qid"], "mcq_test": mcq.get("mcq_test"),
                   "relevant_timestamps": mcq.get("relevant_timestamps"),
                   "duration_in_seconds": (entry.get("video_metadata") or {}).get("duration_in_seconds")})

    @staticmethod
    def _options(mcq: dict[str, Any], where: str) -> list[str]:
        keys = [f"answer_{k}" for k in range(1, 6)]
        if all(k in mcq for k in keys):
            return [str(mcq[k]) for k in keys]
        lines = [m for m in (_MCQ_LINE.match(s) for s in str(mcq.get("mcq_test", "")).splitlines()) if m]
        if [m.group(1) for m in lines] != list("ABCDE"):
            raise AnnotationError(f"{where}: needs answer_1..answer_5 or an mcq_test with lines 'A. ..' to 'E. ..'")
        return [m.group(2) for m in lines]

    def _prompt(self, q: Question) -> str:
        options = q.extra.get("mcq_test") or "\n".join(f"{self.letters[k]}. {o}" for k, o in enumerate(q.options))
        return (f"{VAMBA_HEAD}\n{q.question}\n{options}\n"
                "Respond with only the letter (A, B, C, D, or E) of the correct option.")

    def official_prompt(self, q: Question) -> str:
        return self._prompt(q)

    def release_prompt(self, q: Question) -> str:
        return self._prompt(q)


BENCHMARK = HourVideo()
