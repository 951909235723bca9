"""LVBench (THUDM/LVBench): 103 hour-long videos, 1,549 four-way questions, six multi-label categories.

File `video_info.meta.jsonl`: one video per line (`key`, `type`, `video_info`, `qa` list of `uid`, `question` with the
options inline as "\\n(A) ..\\n(B) ..", `answer` letter, `question_type` list, `time_reference`).

Videos: `videos/<key>.mp4` by default. The official downloader (video2dataset) writes shard-indexed names instead;
put a JSON object `{key: path relative to the data dir}` in `<data dir>/video_map.json` and it is used for every key
it lists.

Prompt: LVBench publishes none, so both protocols use the release's (instruction first, then the file's question with
its inline options, verbatim). Official: LVBench's optional `polish_answer` cleaner, exact match, Overall = pooled;
a question counts in each of its `question_type` labels. Release: 1024 frames, longest edge 560, the release rule.
"""

from __future__ import annotations

import re
from pathlib import Path

from vamba.evals.benchmark import (
    RESPOND_ABCD,
    VAMBA_HEAD,
    AnnotationError,
    Benchmark,
    Question,
    check_unique,
    read_json,
    read_jsonl,
    require,
)
from vamba.evals.protocol import Settings

_OPTION = re.compile(r"\n\(([A-Z])\) ?")
VIDEO_MAP = "video_map.json"


def split_inline_options(text: str, letters: str, where: str) -> tuple[str, list[str]]:
    """'Q?\\n(A) x\\n(B) y' -> ('Q?', ['x', 'y']); the labels must run A, B, C, ... in order."""
    parts = _OPTION.split(text)
    stem, labels, options = parts[0], parts[1::2], parts[2::2]
    if len(labels) < 2 or "".join(labels) != letters[: len(labels)]:
        raise AnnotationError(f"{where}: question must end with options '\\n(A) ..' '\\n(B) ..' in order "
                              f"(found labels {labels or 'none'})")
    return stem, options


class LVBench(Benchmark):
    name = "lvbench"
    default_annotation = "video_info.meta.jsonl"
    video_root = "videos"
    letters = "ABCD"
    settings = {"official": Settings(1024, longest_edge=560), "release": Settings(1024, longest_edge=560)}
    official_rule = "lvbench"
    official_rule_text = ("LVBench official: polish_answer (cut at the first ')', the text after the first '(', "
                          "the first character of its first token), exact case-sensitive match; unparsed and errors "
                          "wrong; Overall = pooled accuracy; a question counts in every category it lists")
    release_note = "the answer rule only (the prompt is the release's under both protocols)"

    def load(self, data_dir: Path, annotation: Path | None = None) -> list[Question]:
        path = self.annotation_path(data_dir, annotation)
        map_file = Path(data_dir) / VIDEO_MAP
        video_map = read_json(map_file) if map_file.exists() else {}
        questions = []
        for lineno, row in read_jsonl(path):
            where = f"{path}:{lineno}"
            try:
                require(row, ("key", "qa"), where)
                if not isinstance(row["qa"], list):
                    raise AnnotationError(f"{where}: field 'qa' must be a list")
            except AnnotationError as e:
                questions.append(self.broken(f"{path.name}:{lineno}", e))
                continue
            key = str(row["key"])
            video = video_map.get(key, f"{self.video_root}/{key}.mp4")
            for i, qa in enumerate(row["qa"]):
                try:
                    questions.append(self._question(qa, row, video, f"{where} (qa {i})"))
                except AnnotationError as e:
                    uid = qa.get("uid") if isinstance(qa, dict) else None
                    questions.append(self.broken(str(uid) if uid is not None else f"{path.name}:{lineno}:{i}", e,
                                                 video))
        check_unique(questions, str(path))
        return questions

    def _question(self, qa: dict, row: dict, video: str, at: str) -> Question:
        require(qa, ("uid", "question", "answer", "question_type"), at)
        stem, options = split_inline_options(qa["question"], self.letters, at)
        answer = str(qa["answer"]).strip().strip("()")
        if answer not in self.letters[: len(options)]:
            raise AnnotationError(f"{at}: field 'answer' {qa['answer']!r} is not one of the option letters")
        types = qa["question_type"]
        types = [types] if isinstance(types, str) else types
        if not isinstance(types, list) or not types:
            raise AnnotationError(f"{at}: field 'question_type' must be a non-empty list")
        return Question(
            qid=str(qa["uid"]), video=video, question=stem, options=options, answer=answer,
            categories={"question_type": [str(t) for t in types]},
            extra={"raw_question": qa["question"], "video_type": row.get("type"),
                   "time_reference": qa.get("time_reference"),
                   "duration_minutes": (row.get("video_info") or {}).get("duration_minutes")})

    def _prompt(self, q: Question) -> str:
        raw = q.extra.get("raw_question")
        if raw is None:  # a question built in code: render its options as the file writes them
            raw = q.question + "".join(f"\n({self.letters[k]}) {o}" for k, o in enumerate(q.options))
        return f"{VAMBA_HEAD}\n{RESPOND_ABCD}\n{raw}"

    def official_prompt(self, q: Question) -> str:
        return self._prompt(q)

    def release_prompt(self, q: Question) -> str:
        return self._prompt(q)


BENCHMARK = LVBench()
