"""MLVU (dev, multiple-choice part): 7 task files, four candidates each; headline M-Avg over the 7 tasks.

Files `json/1_plotQA.json` .. `json/7_topic_reasoning.json` (the default annotation is the `json` folder, which loads
the seven; a single file may be given instead). Each is a list of {`video`, `duration`, `question`, `candidates`,
`answer` (the correct candidate's TEXT), `question_type`}. The answer text is mapped to a letter by the index of
the candidate equal to it; failing that, of the one candidate equal to it ignoring case and whitespace; failing
that the question keeps `answer=None` (answered, not scored) with a loader warning (`extra["load_warning"]`,
`vamba.evals.types.load_warnings`, and a logged warning).

Videos: `video/<task dir>/<video>` with the official task dirs (plotQA, needle, ego, count, order, anomaly_reco,
topic_reasoning); if that file is missing but `video/<file stem>/<video>` (e.g. `video/1_plotQA/..`) exists, that
is used. Question ids: "<question_type>_<index in its file>".

Official: MLVU's prompt, system prompt and "Best Option: (" priming; the char before the first ")"; headline M-Avg
= unweighted mean of the task accuracies (`question_type` group). Release: Vamba's "A. .." layout, pooled.
"""

from __future__ import annotations

from pathlib import Path

from vamba.evals.types import (
    AnnotationError,
    Benchmark,
    Question,
    answer_from_text,
    check_unique,
    option_lines,
    read_json,
    require,
    warn,
)

#: MC file stem -> official video folder.
TASK_FILES: dict[str, str] = {
    "1_plotQA": "plotQA", "2_needle": "needle", "3_ego": "ego", "4_count": "count", "5_order": "order",
    "6_anomaly_reco": "anomaly_reco", "7_topic_reasoning": "topic_reasoning",
}


class MLVU(Benchmark):
    name = "mlvu"
    default_annotation = "json"
    video_root = "video"
    letters = "ABCD"
    official_rule = "mlvu"
    official_headline = "question_type"
    official_rule_text = ("MLVU official: the character before the first ')' (reply primed with 'Best Option: ('), "
                          "else the whole reply; unparsed and errors wrong; headline M-Avg = unweighted mean of "
                          "the task (question_type) accuracies")

    def load(self, data_dir: Path, annotation: Path | None = None) -> list[Question]:
        path = self.annotation_path(data_dir, annotation)
        if path.is_dir():
            files = [path / f"{stem}.json" for stem in TASK_FILES]
            absent = [f.name for f in files if not f.exists()]
            if absent:
                raise AnnotationError(f"{path}: missing MLVU multiple-choice file(s) {', '.join(absent)}")
        else:
            files = [path]
        questions = []
        for file in files:
            questions += self._load_file(Path(data_dir), file)
        check_unique(questions, str(path))
        return questions

    def _load_file(self, data_dir: Path, path: Path) -> list[Question]:
        rows = read_json(path)
        if not isinstance(rows, list):
            raise AnnotationError(f"{path}: expected a JSON list of questions, got {type(rows).__name__}")
        folder = TASK_FILES.get(path.stem, path.stem)
        questions = []
        for i, row in enumerate(rows):
            where = f"{path} record {i}"
            require(row, ("video", "question", "candidates", "answer", "question_type"), where)
            options = row["candidates"]
            if not isinstance(options, list) or not 2 <= len(options) <= len(self.letters):
                raise AnnotationError(f"{where}: 'candidates' must be a list of 2-{len(self.letters)} strings")
            options = [str(o) for o in options]
            answer, warning = answer_from_text(str(row["answer"]), options, self.letters)
            video = f"{self.video_root}/{folder}/{row['video']}"
            alt = f"{self.video_root}/{path.stem}/{row['video']}"
            if not (data_dir / video).exists() and (data_dir / alt).exists():
                video = alt
            task = str(row["question_type"])
            extra = warn({"duration": row.get("duration"), "file": path.name}, where, warning)
            questions.append(Question(qid=f"{task}_{i}", video=video, question=str(row["question"]), options=options,
                                      answer=answer, categories={"question_type": [task]}, extra=extra))
        return questions

    def official_prompt(self, q: Question, subtitles: str | None = None) -> str:
        return f"Question: {q.question}\nOptions:\n{option_lines(q.options, 'paren')}\nOnly give the best option."

    def system_prompt(self, scoring: str = "official") -> str | None:
        super().system_prompt(scoring)
        if scoring == "release":
            return None
        return ("Carefully watch this video and pay attention to every detail. Based on your observations, select "
                "the best option that accurately addresses the question.")

    def response_prefix(self, scoring: str = "official") -> str:
        super().response_prefix(scoring)
        return "" if scoring == "release" else "Best Option: ("


BENCHMARK = MLVU()
