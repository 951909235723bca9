"""NExT-QA (multiple choice): five options per question; accuracy overall, per type and per Acc@C / Acc@T / Acc@D.

Files `test.csv` (default, as Vamba reports the test split: 8,564 questions) or `val.csv` (4,996), columns `video`,
`question`, `answer` (0-4), `qid` (per video), `type` (CW CH TN TP TC DC DL DO), `a0`..`a4`; question id
"<video>_<qid>". Read with the csv module so option texts such as "none" stay strings.

Videos: the map file `map_vid_vidorID.json` ("<video>" -> "<folder>/<video>", looked up next to the annotation,
then in the data dir) gives `NExTVideo/<folder>/<video>.mp4` (the original NExTVideo archive layout). The first
existing of that, `<folder>/<video>.mp4`, and the flat HF-mirror layout `NExTVideo/<video>.mp4` is used; when none
exists, the mapped path (flat without a map entry) is kept for the runner to report.

Official: NExT-QA's `eval_mc.py` scores a predicted option index by exact match and reports per type with TP merged
into TN, Acc@C / Acc@T / Acc@D and the pooled overall. It defines no prompt or reply parser, so the official
protocol takes lmms-eval's `nextqa_mc_test` ones: the stripped question and "A. .." lines with no instruction, and
its MMMU-style parser (`mmmu` rule) with a random option, from one seeded stream in annotation order, where it finds
none. Release: 512 frames without pre-resize, its "A. .." x5 prompt and rule, per raw type (TP separate), pooled.
"""

from __future__ import annotations

import csv
from pathlib import Path

from vamba.evals.benchmark import VAMBA_HEAD, AnnotationError, Benchmark, Question, check_unique, read_json
from vamba.evals.protocol import Settings

COLUMNS = ("video", "question", "answer", "qid", "type", "a0", "a1", "a2", "a3", "a4")
MAP_FILE = "map_vid_vidorID.json"
#: question type -> reported family (causal: why/how; temporal: now/previous/next; descriptive).
FAMILY = {"CW": "Acc@C", "CH": "Acc@C", "TN": "Acc@T", "TP": "Acc@T", "TC": "Acc@T", "DC": "Acc@D", "DL": "Acc@D",
          "DO": "Acc@D"}


class NExTQA(Benchmark):
    name = "nextqa"
    default_annotation = "test.csv"
    video_root = "NExTVideo"
    letters = "ABCDE"
    settings = {p: Settings(512, longest_edge=None) for p in ("official", "release")}
    official_rule = "mmmu"
    official_unparsed = "random"
    official_rule_text = ("NExT-QA official (eval_mc.py tables; lmms-eval's nextqa_mc_test prompt and MMMU-style "
                          "parser, a random option where it finds none); errors wrong; per type (TP in TN), "
                          "Acc@C/T/D; headline = overall accuracy (pooled)")
    release_note = "per raw type (TP separate) without Acc@C/T/D; unparsed replies count wrong (official: random)"

    def load(self, data_dir: Path, annotation: Path | None = None) -> list[Question]:
        data_dir = Path(data_dir)
        path = self.annotation_path(data_dir, annotation)
        map_path = next((p for p in (path.parent / MAP_FILE, data_dir / MAP_FILE) if p.exists()), None)
        video_map = read_json(map_path) if map_path else {}
        questions = []
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise AnnotationError(f"{path}:1: missing column(s) {', '.join(missing)}")
                for i, row in enumerate(reader):
                    try:
                        questions.append(self._question(row, f"{path}:{reader.line_num}", data_dir, video_map))
                    except AnnotationError as e:
                        questions.append(self.broken(f"{path.name}:{i}", e))
        except OSError as e:
            raise AnnotationError(f"{path}: cannot read annotation file ({e.strerror})") from None
        except csv.Error as e:
            raise AnnotationError(f"{path}: malformed CSV ({e})") from None
        check_unique(questions, str(path))
        return questions

    def _question(self, row: dict, where: str, data_dir: Path, video_map: dict) -> Question:
        if any(row.get(c) is None for c in COLUMNS):
            missing = [c for c in COLUMNS if row.get(c) is None]
            raise AnnotationError(f"{where}: row has fewer fields than the header (missing {', '.join(missing)})")
        answer, qtype = row["answer"].strip(), row["type"].strip()
        if answer not in {"0", "1", "2", "3", "4"}:
            raise AnnotationError(f"{where}: field 'answer' {answer!r} is not an option index 0-4")
        if qtype not in FAMILY:
            raise AnnotationError(f"{where}: field 'type' {qtype!r} is not one of {', '.join(FAMILY)}")
        video = row["video"].strip()
        return Question(
            qid=f"{video}_{row['qid'].strip()}", video=self._video_path(video, data_dir, video_map),
            question=row["question"], options=[row[f"a{k}"] for k in range(5)], answer=self.letters[int(answer)],
            categories={"type": [qtype], "family": [FAMILY[qtype]]}, extra={"video_id": video})

    def _video_path(self, video: str, data_dir: Path, video_map: dict) -> str:
        flat = f"{self.video_root}/{video}.mp4"
        if video not in video_map:
            return flat
        mapped = [f"{self.video_root}/{video_map[video]}.mp4", f"{video_map[video]}.mp4"]
        return next((p for p in (*mapped, flat) if (data_dir / p).exists()), mapped[0])

    def categories_for(self, q: Question, protocol: str) -> dict[str, list[str]]:
        qtype = q.categories.get("type", [])
        if protocol == "release":
            return {"type": qtype}
        return {"type": ["TN" if t == "TP" else t for t in qtype], "family": q.categories.get("family", [])}

    def official_prompt(self, q: Question) -> str:
        return "\n".join([q.question.strip(), *(f"{self.letters[k]}. {o.strip()}" for k, o in enumerate(q.options))])

    def release_prompt(self, q: Question) -> str:
        options = "\n".join(f"{self.letters[k]}. {o}" for k, o in enumerate(q.options))
        return (f"{VAMBA_HEAD} Respond with only the letter (A, B, C, D, or E) of the correct option.\n{q.question}\n"
                f"{options}")


BENCHMARK = NExTQA()
