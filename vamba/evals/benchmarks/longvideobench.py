"""LongVideoBench (validation): 1,337 questions with 4-5 candidates; groups duration_group and question_category.

File `lvb_val.json`: a list of {`id`, `video_path` ("<video_id>.mp4"), `subtitle_path`, `question`, `candidates`,
`correct_choice` (0-based index), `question_category`, `duration_group`, `duration`,
`starting_timestamp_for_subtitles`, ..}. `lvb_test_wo_gt.json` (no `correct_choice`) loads with `answer=None`.
Videos `videos/<video_path>`, subtitles `subtitles/<subtitle_path>`.

Official: the official loader's frames (n = min(frames, int(duration)), index i = int(int(duration * fps) / n) * i),
its input list joined by newlines ("Question: ..", one "A. .." element per candidate, "Answer with the option's
letter from the given choices directly."), and with `subtitles=true` its interleaved subtitle elements (kept in
its order, placed between the video and the question: Vamba reads the video as one stream); the authors' scorer
(`longvideobench` rule) with a random option, drawn from one seeded stream in annotation order, where it finds
none; pooled. Release: 512 frames, longest edge 480, no subtitles, its prompt (whose instruction always says
"(A, B, C, or D)", even above five options), the release rule, pooled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vamba.evals.benchmark import (
    RESPOND_ABCD,
    VAMBA_HEAD,
    AnnotationError,
    Benchmark,
    Question,
    check_unique,
    read_json,
    require,
)
from vamba.evals.protocol import Settings
from vamba.evals.subtitles import longvideobench_lines


def loader_indices(total: int, fps: float, duration: float, max_frames: int) -> list[int]:
    """LongVideoBench's loader: n = min(max_frames, int(duration)) frames, i * int(int(duration * fps) / n), from
    frame 0 (indices past the file's last frame, when `duration` overstates it, are clamped to it)."""
    n = min(max_frames, int(duration))
    if n <= 0:
        raise AnnotationError(f"field 'duration' {duration!r} gives no frame (the official loader needs >= 1 s)")
    step = int(int(duration * fps) / n)
    return [min(step * i, total - 1) for i in range(n)]


class LongVideoBench(Benchmark):
    name = "longvideobench"
    default_annotation = "lvb_val.json"
    video_root = "videos"
    letters = "ABCDE"
    settings = {"official": Settings(512, sampler="longvideobench"), "release": Settings(512)}
    official_rule = "longvideobench"
    official_unparsed = "random"
    official_rule_text = ("LongVideoBench official (the authors' scorer): delete its answer prefixes, the first "
                          "capital A-E anywhere; none (or >10 words without one) -> a random option of the question "
                          "from one seeded stream; errors wrong; headline = overall accuracy (pooled)")
    release_note = ("no subtitles, the instruction lists (A, B, C, or D) even for five options, unparsed replies "
                    "count wrong (official: a random option)")

    def load(self, data_dir: Path, annotation: Path | None = None) -> list[Question]:
        path = self.annotation_path(data_dir, annotation)
        rows = read_json(path)
        if not isinstance(rows, list):
            raise AnnotationError(f"{path}: expected a JSON list of questions, got {type(rows).__name__}")
        questions = []
        for i, row in enumerate(rows):
            try:
                questions.append(self._question(row, f"{path} record {i}"))
            except AnnotationError as e:
                qid = row.get("id") if isinstance(row, dict) else None
                questions.append(self.broken(str(qid) if qid is not None else f"{path.name}:{i}", e))
        check_unique(questions, str(path))
        return questions

    def _question(self, row: Any, where: str) -> Question:
        require(row, ("id", "video_path", "question", "candidates"), where)
        options = row["candidates"]
        if not isinstance(options, list) or not 2 <= len(options) <= len(self.letters):
            raise AnnotationError(f"{where}: field 'candidates' must be a list of 2-{len(self.letters)} strings")
        answer = None
        if row.get("correct_choice") is not None:
            choice = row["correct_choice"]
            if isinstance(choice, bool) or not isinstance(choice, int) or not 0 <= choice < len(options):
                raise AnnotationError(f"{where}: field 'correct_choice' {choice!r} is not a 0-based index into "
                                      f"{len(options)} candidates")
            answer = self.letters[choice]
        categories = {k: [str(row[k])] for k in ("duration_group", "question_category") if k in row}
        return Question(
            qid=str(row["id"]), video=f"{self.video_root}/{row['video_path']}", question=str(row["question"]),
            options=[str(o) for o in options], answer=answer, categories=categories,
            subtitles=f"subtitles/{row['subtitle_path']}" if row.get("subtitle_path") else None,
            extra={"where": where, **{k: row.get(k) for k in ("video_id", "duration", "topic_category", "level",
                                                             "position", "starting_timestamp_for_subtitles")}})

    def _needs(self, q: Question, key: str) -> Any:
        if q.extra.get(key) is None:
            raise AnnotationError(f"{q.extra.get('where', q.qid)}: missing field {key} (the official protocol "
                                  "needs it)")
        return q.extra[key]

    def sampler(self, q: Question, settings: Settings, frames: int):
        if settings.sampler == "longvideobench":
            duration = float(self._needs(q, "duration"))
            return lambda total, fps: loader_indices(total, fps, duration, frames)
        return super().sampler(q, settings, frames)

    def subtitle_text(self, q: Question, data_dir: Path, indices: Any, fps: float) -> str | None:
        if not q.subtitles:
            return None
        offset = float(self._needs(q, "starting_timestamp_for_subtitles"))
        duration = float(self._needs(q, "duration"))
        return longvideobench_lines(Path(data_dir) / q.subtitles, [i / fps for i in indices], offset, duration)

    def official_prompt(self, q: Question) -> str:
        options = "".join(f"{self.letters[k]}. {o}\n" for k, o in enumerate(q.options))
        return f"Question: {q.question}\n{options}Answer with the option's letter from the given choices directly."

    def release_prompt(self, q: Question) -> str:
        options = "\n".join(f"{self.letters[k]}. {o}" for k, o in enumerate(q.options))
        return f"{VAMBA_HEAD} {RESPOND_ABCD}\n{q.question}\n{options}"


BENCHMARK = LongVideoBench()
