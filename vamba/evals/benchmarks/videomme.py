"""Video-MME: 900 videos (short / medium / long), 2,700 four-way questions; headline "w/o subtitles".

File `videomme/test-00000-of-00001.parquet` (HF lmms-lab/Video-MME), string columns `video_id`, `duration`,
`domain`, `sub_category`, `url`, `videoID` (YouTube id = video file stem), `question_id`, `task_type`, `question`,
`options` (4 strings prefixed "A. ".."D. ", stripped here), `answer` (letter).

Videos: `data/<videoID>.mp4`; a few are .MP4 / .mkv, so when `data/<videoID>.mp4` is missing the first file of
`data/` with that stem (any extension, sorted) is used; when none exists the .mp4 path is kept for the runner to
report. Subtitles: `subtitle/<videoID>.srt`, set on the question only when the file exists; the runner passes the
subtitle *text* (of the sampled frames) to `prompt(..., subtitles=...)`, which adds the official preamble.

Official: the official prompt and extractor; empty extractions are excluded from every denominator (errors still
count wrong); groups duration / domain / sub_category / task_type; headline overall (short / medium / long are the
`duration` group). Release: Vamba's prompt (options joined by one space, no "The best answer is:"), release rule.
"""

from __future__ import annotations

import re
from pathlib import Path

from vamba.evals.types import AnnotationError, Benchmark, Question, check_unique, letter_list, option_lines

COLUMNS = ("video_id", "duration", "domain", "sub_category", "videoID", "question_id", "task_type", "question",
           "options", "answer")
_PREFIX = re.compile(r"^\s*([A-Z])\.\s?")


def _stems(folder: Path) -> dict[str, str]:
    """stem -> file name for a folder (first in sorted order), one listing instead of a glob per question."""
    found: dict[str, str] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            found.setdefault(p.stem, p.name)
    return found


class VideoMME(Benchmark):
    name = "videomme"
    default_annotation = "videomme/test-00000-of-00001.parquet"
    video_root = "data"
    letters = "ABCD"
    official_rule = "videomme"
    official_unparsed = "exclude"
    official_rule_text = ("Video-MME official: delete answer prefixes, first standalone capital A-D (none if >10 "
                          "words without one); empty extractions excluded from the denominator, errors wrong; "
                          "headline = overall accuracy over answered questions")

    def load(self, data_dir: Path, annotation: Path | None = None) -> list[Question]:
        import pyarrow.parquet as pq

        path = self.annotation_path(data_dir, annotation)
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as e:  # pyarrow's errors subclass these
            raise AnnotationError(f"{path}: cannot read as parquet ({e})") from None
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise AnnotationError(f"{path}: missing column(s) {', '.join(missing)}")
        data_dir = Path(data_dir)
        videos = _stems(data_dir / self.video_root)
        questions = []
        for i, row in enumerate(table.select(list(COLUMNS)).to_pylist()):
            where = f"{path} row {i}"
            options = row["options"]
            if not isinstance(options, list) or len(options) != len(self.letters):
                raise AnnotationError(f"{where}: 'options' must be a list of {len(self.letters)} strings")
            options = [self._strip_letter(str(o), self.letters[k]) for k, o in enumerate(options)]
            if row["answer"] not in self.letters:
                raise AnnotationError(f"{where}: answer {row['answer']!r} is not one of {self.letters}")
            vid = str(row["videoID"])
            video = f"{self.video_root}/{vid}.mp4"
            if vid in videos and not (data_dir / video).exists():
                video = f"{self.video_root}/{videos[vid]}"
            sub = f"subtitle/{vid}.srt" if (data_dir / f"subtitle/{vid}.srt").exists() else None
            questions.append(Question(
                qid=str(row["question_id"]), video=video, question=str(row["question"]), options=options,
                answer=row["answer"], subtitles=sub,
                categories={k: [str(row[k])] for k in ("duration", "domain", "sub_category", "task_type")},
                extra={"video_id": row["video_id"], "videoID": vid}))
        check_unique(questions, str(path))
        return questions

    @staticmethod
    def _strip_letter(option: str, letter: str) -> str:
        m = _PREFIX.match(option)
        return option[m.end():] if m and m.group(1) == letter else option

    @staticmethod
    def _subtitle_preamble(subtitles: str | None) -> str:
        return f"This video's subtitles are listed below:\n{subtitles}\n" if subtitles else ""

    def official_prompt(self, q: Question, subtitles: str | None = None) -> str:
        return (f"{self._subtitle_preamble(subtitles)}Select the best answer to the following multiple-choice "
                f"question based on the video. Respond with only the letter ({letter_list(self.letters_for(q))}) "
                f"of the correct option.\n{q.question}\n{option_lines(q.options)}\nThe best answer is:")

    def prompt(self, q: Question, scoring: str = "official", subtitles: str | None = None) -> str:
        if scoring == "release":  # Vamba had no subtitles; a caller passing them still gets the preamble
            return self._subtitle_preamble(subtitles) + self.release_prompt(q)
        return super().prompt(q, scoring, subtitles)

    def release_prompt(self, q: Question) -> str:
        return (f"Select the best answer to the following multiple-choice question based on the video. Respond "
                f"with only the letter ({letter_list(self.letters_for(q))}) of the correct option.\n{q.question}\n"
                f"{option_lines(q.options, sep=' ')}")


BENCHMARK = VideoMME()
