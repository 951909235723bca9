"""LongVideoBench (validation): 1,337 questions with 4-5 candidates; groups duration_group and question_category.

File `lvb_val.json`: a list of {`id`, `video_path` ("<video_id>.mp4"), `subtitle_path`, `question`, `candidates`,
`correct_choice` (0-based index), `question_category`, `duration_group`, ..}. `lvb_test_wo_gt.json` (no
`correct_choice`) loads with `answer=None`. Videos `videos/<video_path>`, subtitles `subtitles/<subtitle_path>`.

Official: "Question: ..", "A. .." lines, "Answer with the option's letter from the given choices directly."; the
Video-MME extractor over the question's letters (A-D or A-E); a reply with no letter gets a seeded random option
(`scoring.random_letter`, reproducible per seed and question; records must carry `options` or `num_options`,
else 5 options are assumed); errors count wrong. Headline: overall (pooled) accuracy.
Release: FORMATS.md gives no Vamba LongVideoBench prompt, so Vamba's per-line layout is used.
"""

from __future__ import annotations

from pathlib import Path

from vamba.evals.types import AnnotationError, Benchmark, Question, check_unique, option_lines, read_json, require


class LongVideoBench(Benchmark):
    name = "longvideobench"
    default_annotation = "lvb_val.json"
    video_root = "videos"
    letters = "ABCDE"
    official_rule = "videomme"
    official_unparsed = "random"
    official_rule_text = ("LongVideoBench official: Video-MME extractor over the option letters, a seeded random "
                          "option when none is found, errors wrong; headline = overall accuracy (pooled)")

    def load(self, data_dir: Path, annotation: Path | None = None) -> list[Question]:
        path = self.annotation_path(data_dir, annotation)
        rows = read_json(path)
        if not isinstance(rows, list):
            raise AnnotationError(f"{path}: expected a JSON list of questions, got {type(rows).__name__}")
        questions = []
        for i, row in enumerate(rows):
            where = f"{path} record {i}"
            require(row, ("id", "video_path", "question", "candidates"), where)
            options = row["candidates"]
            if not isinstance(options, list) or not 2 <= len(options) <= len(self.letters):
                raise AnnotationError(f"{where}: 'candidates' must be a list of 2-{len(self.letters)} strings")
            answer = None
            if row.get("correct_choice") is not None:
                choice = row["correct_choice"]
                if isinstance(choice, bool) or not isinstance(choice, int) or not 0 <= choice < len(options):
                    raise AnnotationError(f"{where}: correct_choice {choice!r} is not a 0-based index into "
                                          f"{len(options)} candidates")
                answer = self.letters[choice]
            categories = {k: [str(row[k])] for k in ("duration_group", "question_category") if k in row}
            questions.append(Question(
                qid=str(row["id"]), video=f"{self.video_root}/{row['video_path']}", question=str(row["question"]),
                options=[str(o) for o in options], answer=answer, categories=categories,
                subtitles=f"subtitles/{row['subtitle_path']}" if row.get("subtitle_path") else None,
                extra={k: row.get(k) for k in ("video_id", "duration", "topic_category", "level", "position",
                                                "starting_timestamp_for_subtitles")}))
        check_unique(questions, str(path))
        return questions

    def official_prompt(self, q: Question, subtitles: str | None = None) -> str:
        return (f"Question: {q.question}\n{option_lines(q.options)}\n"
                "Answer with the option's letter from the given choices directly.")


BENCHMARK = LongVideoBench()
