"""Video-MME: 900 videos (short / medium / long), 2,700 four-way questions; headline "w/o subtitles".

File `videomme/test-00000-of-00001.parquet` (HF lmms-lab/Video-MME), string columns `video_id`, `duration`,
`domain`, `sub_category`, `url`, `videoID` (YouTube id = video file stem), `question_id`, `task_type`, `question`,
`options` (4 strings "A. ".."D. "), `answer` (letter). A `.json` annotation holding a list of such records loads
the same way.

Videos: `data/<videoID>.mp4`; a few are .MP4 / .mkv, so when `data/<videoID>.mp4` is missing the first file of
`data/` with that stem (any extension, sorted) is used; when none exists the .mp4 path is kept for the runner to
report. Subtitles: `subtitle/<videoID>.srt` (744 videos), used with `subtitles=true`: the cue lines at the frames
the model sees (`vamba.evals.subtitles.videomme_lines`), under "This video's subtitles are listed below:".

Official: the official prompt with the file's options verbatim, frames by the official extractor's indices,
`extract_characters_regex`; empty extractions are left out of every denominator (errors still count wrong); groups
duration / domain / sub_category / task_type; headline overall. Release: 512 frames, longest edge 480, the two
instruction sentences on two lines, options on one line, no "The best answer is:", the release rule, pooled.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from vamba.evals.benchmark import (
    RESPOND_ABCD,
    VAMBA_HEAD,
    AnnotationError,
    Benchmark,
    Question,
    check_unique,
    read_json,
)
from vamba.evals.protocol import Settings
from vamba.evals.subtitles import videomme_lines

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


def extractor_indices(total: int, n: int) -> np.ndarray:
    """The official frame/subtitle extractor's indices (video-slicer `get_seq_frames`): segment size
    s = (total - 1) / n, index i = (round(s * i) + round(s * (i + 1))) // 2 (numpy rounding, half to even)."""
    seg = float(total - 1) / n
    return np.array([(int(np.round(seg * i)) + int(np.round(seg * (i + 1)))) // 2 for i in range(n)], dtype=np.int64)


class VideoMME(Benchmark):
    name = "videomme"
    default_annotation = "videomme/test-00000-of-00001.parquet"
    video_root = "data"
    letters = "ABCD"
    settings = {"official": Settings(512, sampler="videomme"), "release": Settings(512)}
    official_rule = "videomme"
    official_unparsed = "exclude"
    official_rule_text = ("Video-MME official: delete the answer prefixes, the first capital A-D anywhere (none if "
                          ">10 words without one); empty extractions left out of every denominator, errors wrong; "
                          "headline = overall accuracy over answered questions")
    release_note = ("no subtitles, options on one line, unparsed replies count wrong (official: left out of the "
                    "denominator), pooled over all 2,700")

    def load(self, data_dir: Path, annotation: Path | None = None) -> list[Question]:
        path = self.annotation_path(data_dir, annotation)
        rows = self._rows(path)
        data_dir = Path(data_dir)
        videos = _stems(data_dir / self.video_root)
        questions = []
        for i, row in enumerate(rows):
            try:
                questions.append(self._question(row, f"{path} row {i}", data_dir, videos))
            except AnnotationError as e:
                qid = row.get("question_id") if isinstance(row, dict) else None
                questions.append(self.broken(str(qid) if qid is not None else f"{path.name}:{i}", e))
        check_unique(questions, str(path))
        return questions

    @staticmethod
    def _rows(path: Path) -> list[Any]:
        if path.suffix == ".json":
            rows = read_json(path)
            if not isinstance(rows, list):
                raise AnnotationError(f"{path}: expected a JSON list of questions, got {type(rows).__name__}")
            return rows
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as e:  # pyarrow's errors subclass these
            raise AnnotationError(f"{path}: cannot read as parquet ({e})") from None
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise AnnotationError(f"{path}: missing column(s) {', '.join(missing)}")
        return table.select(list(COLUMNS)).to_pylist()

    def _question(self, row: Any, where: str, data_dir: Path, videos: dict[str, str]) -> Question:
        missing = [c for c in COLUMNS if not isinstance(row, dict) or row.get(c) is None]
        if missing:
            raise AnnotationError(f"{where}: missing field(s) {', '.join(missing)}")
        raw = row["options"]
        if not isinstance(raw, list) or len(raw) != len(self.letters):
            raise AnnotationError(f"{where}: field 'options' must be a list of {len(self.letters)} strings")
        if row["answer"] not in self.letters:
            raise AnnotationError(f"{where}: field 'answer' {row['answer']!r} is not one of {self.letters}")
        vid = str(row["videoID"])
        video = f"{self.video_root}/{vid}.mp4"
        if vid in videos and not (data_dir / video).exists():
            video = f"{self.video_root}/{videos[vid]}"
        sub = f"subtitle/{vid}.srt" if (data_dir / f"subtitle/{vid}.srt").exists() else None
        return Question(
            qid=str(row["question_id"]), video=video, question=str(row["question"]),
            options=[self._strip_letter(str(o), self.letters[k]) for k, o in enumerate(raw)],
            answer=row["answer"], subtitles=sub,
            categories={k: [str(row[k])] for k in ("duration", "domain", "sub_category", "task_type")},
            extra={"video_id": row["video_id"], "videoID": vid, "raw_options": [str(o) for o in raw]})

    @staticmethod
    def _strip_letter(option: str, letter: str) -> str:
        m = _PREFIX.match(option)
        return option[m.end():] if m and m.group(1) == letter else option

    def _options(self, q: Question) -> list[str]:
        return q.extra.get("raw_options") or [f"{self.letters[k]}. {o}" for k, o in enumerate(q.options)]

    def sampler(self, q: Question, settings: Settings, frames: int):
        if settings.sampler == "videomme":
            return lambda total, fps: extractor_indices(total, frames)
        return super().sampler(q, settings, frames)

    def subtitle_text(self, q: Question, data_dir: Path, indices: Any, fps: float) -> str | None:
        return videomme_lines(Path(data_dir) / q.subtitles, indices, fps) if q.subtitles else None

    def subtitle_block(self, subtitles: str) -> str:
        return f"This video's subtitles are listed below:\n{subtitles}\n"

    def official_prompt(self, q: Question) -> str:
        options = "\n".join(self._options(q))
        return f"{VAMBA_HEAD} {RESPOND_ABCD}\n{q.question}\n{options}\nThe best answer is:"

    def release_prompt(self, q: Question) -> str:
        return f"{VAMBA_HEAD}\n{RESPOND_ABCD}\n{q.question}\n{' '.join(self._options(q))}"


BENCHMARK = VideoMME()
