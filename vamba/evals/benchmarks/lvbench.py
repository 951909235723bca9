"""LVBench (THUDM/LVBench): 103 hour-long videos, 1,549 four-way questions, six multi-label categories.

File `video_info.meta.jsonl`: one video per line (`key`, `type`, `video_info`, `qa` list of `uid`, `question` with the
options inline as "\\n(A) ..\\n(B) ..", `answer` letter, `question_type` list, `time_reference`).

Videos: `videos/<key>.mp4` by default. The official downloader (video2dataset) writes shard-indexed names instead;
put a JSON object `{key: path relative to the data dir}` in `<data dir>/video_map.json` and it is used for every key
it lists.

Prompt: LVBench publishes no generation prompt, so both scorings use Vamba's LVBench prompt (instruction first,
then the question with its inline options, re-rendered exactly as in the file). Official scoring: the letter after
LVBench's optional official cleaner, exact match, headline Overall = pooled accuracy; categories count a question in
each of its labels.
"""

from __future__ import annotations

import re
from pathlib import Path

from vamba.evals.types import (
    VAMBA_HEAD,
    AnnotationError,
    Benchmark,
    Question,
    check_unique,
    letter_list,
    option_lines,
    read_json,
    read_jsonl,
    require,
)

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
    official_rule = "lvbench"
    official_rule_text = ("LVBench official: exact letter (optional official cleaner: cut at the first ')', text "
                          "after '(', first character); unparsed and errors wrong; headline Overall = pooled "
                          "accuracy; a question counts in every category it lists")

    def load(self, data_dir: Path, annotation: Path | None = None) -> list[Question]:
        path = self.annotation_path(data_dir, annotation)
        map_file = Path(data_dir) / VIDEO_MAP
        video_map = read_json(map_file) if map_file.exists() else {}
        questions = []
        for lineno, row in read_jsonl(path):
            where = f"{path}:{lineno}"
            require(row, ("key", "qa"), where)
            if not isinstance(row["qa"], list):
                raise AnnotationError(f"{where}: field 'qa' must be a list")
            key = str(row["key"])
            video = video_map.get(key, f"{self.video_root}/{key}.mp4")
            for i, qa in enumerate(row["qa"]):
                at = f"{where} (qa {i})"
                require(qa, ("uid", "question", "answer", "question_type"), at)
                stem, options = split_inline_options(qa["question"], self.letters, at)
                answer = str(qa["answer"]).strip().strip("()")
                if answer not in self.letters[: len(options)]:
                    raise AnnotationError(f"{at}: answer {qa['answer']!r} is not one of the option letters")
                types = qa["question_type"]
                types = [types] if isinstance(types, str) else types
                if not isinstance(types, list) or not types:
                    raise AnnotationError(f"{at}: 'question_type' must be a non-empty list")
                questions.append(Question(
                    qid=str(qa["uid"]), video=video, question=stem, options=options, answer=answer,
                    categories={"question_type": [str(t) for t in types]},
                    extra={"video_type": row.get("type"), "time_reference": qa.get("time_reference"),
                           "duration_minutes": (row.get("video_info") or {}).get("duration_minutes")}))
        check_unique(questions, str(path))
        return questions

    def _prompt(self, q: Question) -> str:
        return (f"{VAMBA_HEAD}\nRespond with only the letter ({letter_list(self.letters_for(q))}) of the correct "
                f"option.\n{q.question}\n{option_lines(q.options, 'paren')}")

    def official_prompt(self, q: Question, subtitles: str | None = None) -> str:
        return self._prompt(q)

    def release_prompt(self, q: Question) -> str:
        return self._prompt(q)


BENCHMARK = LVBench()
