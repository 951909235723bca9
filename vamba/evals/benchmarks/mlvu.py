"""MLVU (dev, multiple-choice part): 7 task files, four candidates each; headline M-Avg over the 7 tasks.

Files `json/1_plotQA.json` .. `json/7_topic_reasoning.json` (the default annotation is the `json` folder, which loads
the seven; a single file may be given instead). Each is a list of {`video`, `duration`, `question`, `candidates`,
`answer` (the correct candidate's TEXT), `question_type`}. The gold letter is that of the candidate exactly equal
to `answer`: the LAST equal one under the official protocol (its loop does not break), the FIRST under the
release's; with none equal, the gold is "@" (counted, never correct, in both) and a loader warning names it
(`extra["load_warning"]`).

Videos: `video/<task dir>/<video>` with the official task dirs (plotQA, needle, ego, count, order, anomaly_reco,
topic_reasoning); if that file is missing but `video/<file stem>/<video>` (the release's layout, e.g.
`video/1_plotQA/..`) exists, that is used. Question ids: "<question_type>_<index in its file>".

Official: MLVU's generic template (system prompt, "Question/Options/(A) .." text, reply primed with "Best Option: (",
`check_ans`), headline M-Avg = unweighted mean of the task accuracies. Release: 512 frames, longest edge 480, the
release's "A. .." prompt and rule, pooled accuracy.
"""

from __future__ import annotations

from pathlib import Path

from vamba.evals.benchmark import (
    NO_GOLD,
    RESPOND_ABCD,
    VAMBA_HEAD,
    AnnotationError,
    Benchmark,
    Question,
    check_unique,
    gold_from_text,
    read_json,
    require,
    warn,
)
from vamba.evals.protocol import Settings

#: MC file stem -> official video folder.
TASK_FILES: dict[str, str] = {
    "1_plotQA": "plotQA", "2_needle": "needle", "3_ego": "ego", "4_count": "count", "5_order": "order",
    "6_anomaly_reco": "anomaly_reco", "7_topic_reasoning": "topic_reasoning",
}


def paren_options_prompt(q: Question) -> str:
    """MLVU's and MVBench's official user text: their `qa_template` (right-stripped) + the fixed last line."""
    lines = "".join(f"({chr(ord('A') + k)}) {c}\n" for k, c in enumerate(q.options))
    return f"Question: {q.question}\nOptions:\n{lines}".rstrip() + "\nOnly give the best option."


class MLVU(Benchmark):
    name = "mlvu"
    default_annotation = "json"
    video_root = "video"
    letters = "ABCD"
    settings = {"official": Settings(512, max_new_tokens=100), "release": Settings(512)}
    official_system = ("Carefully watch this video and pay attention to every detail. Based on your observations, "
                       "select the best option that accurately addresses the question.")
    official_priming = "Best Option: ("
    official_rule = "mlvu"
    official_headline = "question_type"
    official_rule_text = ("MLVU official: the character before the first ')' of the reply (primed with 'Best Option: "
                          "('), else the whole reply, must equal the letter; unparsed and errors wrong; headline "
                          "M-Avg = unweighted mean of the task (question_type) accuracies")
    release_note = "pooled accuracy instead of M-Avg; a duplicated candidate text gives the first letter, not the last"

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
            try:
                require(row, ("video", "question", "candidates", "answer", "question_type"), where)
                options = row["candidates"]
                if not isinstance(options, list) or not 1 <= len(options) <= len(self.letters):
                    raise AnnotationError(f"{where}: field 'candidates' must be a list of 1-{len(self.letters)} "
                                          "strings")
            except AnnotationError as e:
                task = row.get("question_type", path.stem) if isinstance(row, dict) else path.stem
                questions.append(self.broken(f"{task}_{i}", e))
                continue
            options, answer = [str(o) for o in options], str(row["answer"])
            video = f"{self.video_root}/{folder}/{row['video']}"
            alt = f"{self.video_root}/{path.stem}/{row['video']}"
            if not (data_dir / video).exists() and (data_dir / alt).exists():
                video = alt
            task = str(row["question_type"])
            warning = None if answer in options else f"answer {answer!r} matches no candidate (gold '@': wrong)"
            extra = warn({"duration": row.get("duration"), "file": path.name, "answer_text": answer}, where, warning)
            questions.append(Question(qid=f"{task}_{i}", video=video, question=str(row["question"]), options=options,
                                      answer=gold_from_text(answer, options, last=True),
                                      categories={"question_type": [task]}, extra=extra))
        return questions

    def gold(self, q: Question, protocol: str) -> str | None:
        text = q.extra.get("answer_text")
        if protocol != "release" or text is None:
            return q.answer
        return gold_from_text(text, q.options, last=False) if q.options else NO_GOLD

    def official_prompt(self, q: Question) -> str:
        return paren_options_prompt(q)

    def release_prompt(self, q: Question) -> str:
        options = "\n".join(f"{self.letters[k]}. {o}" for k, o in enumerate(q.options))
        return f"{VAMBA_HEAD} {RESPOND_ABCD}\n{q.question}\n{options}"


BENCHMARK = MLVU()
