"""MVBench: 20 short-video tasks x 200 questions, 1-5 candidates; headline Avg = pooled accuracy.

Files `json/<task>.json` (the default annotation is the `json` folder: every `*.json` in it, sorted; a single file
may be given). Each is a list of {`video`, `question`, `candidates`, `answer` (the correct candidate's text),
`start`/`end` (seconds)}. The gold letter is that of the LAST candidate equal to `answer` (both protocols: the
official loop does not break, and the release uses the official loader), or "@" when none is (counted, never right).
A question with fewer candidates than its task's usual count loads and is scored like any other.

Videos: `video/<source folder>/<video>` with the source folder of each task in the official evaluation
(`TASK_DIRS`; an unknown task reads `video/<video>`). Frames: the official loader's `get_index` (`notebook_indices`)
in both protocols, over `start`/`end` only for the five tasks whose official loader uses them (`BOUNDED`), the
rest over the whole video. Episodic Reasoning reads 3-fps frame folders whose files are numbered from 1
(`00001.jpg`); they are not pre-resized by the release.

Official: the notebook's system prompt (ending in a newline, and also starting the user text: `system_llm=True`),
"Question/Options/(A) .." text, reply primed with "Best option:(", its `check_ans` (`mvbench` rule: an empty reply is
right); Avg = pooled correct / total. Release: 512 frames, longest edge 480 for video files, no system prompt or
priming, "A. .." lines and "Answer with the option's letter from the given choices directly.", the release rule.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from vamba.data.frames import FrameSpec
from vamba.evals.benchmark import (
    AnnotationError,
    Benchmark,
    Question,
    check_unique,
    gold_from_text,
    read_json,
    require,
    warn,
)
from vamba.evals.benchmarks.mlvu import paren_options_prompt
from vamba.evals.protocol import Settings

#: task (json stem) -> folder under video/ (official MVBench evaluation).
TASK_DIRS: dict[str, str] = {
    "action_sequence": "star/Charades_v1_480", "action_prediction": "star/Charades_v1_480",
    "action_antonym": "ssv2_video", "fine_grained_action": "Moments_in_Time_Raw/videos",
    "unexpected_action": "FunQA_test/test", "object_existence": "clevrer/video_validation",
    "object_interaction": "star/Charades_v1_480", "object_shuffle": "perception/videos",
    "moving_direction": "clevrer/video_validation", "action_localization": "sta/sta_video",
    "scene_transition": "scene_qa/video", "action_count": "perception/videos",
    "moving_count": "clevrer/video_validation", "moving_attribute": "clevrer/video_validation",
    "state_change": "perception/videos", "fine_grained_pose": "nturgbd", "character_order": "perception/videos",
    "egocentric_navigation": "vlnqa", "episodic_reasoning": "tvqa/frames_fps3_hq",
    "counterfactual_inference": "clevrer/video_validation",
}
#: The tasks whose official loader reads only [start, end].
BOUNDED = frozenset({"action_sequence", "action_prediction", "object_interaction", "action_localization",
                     "episodic_reasoning"})
FRAME_TASKS = {"episodic_reasoning": 3}
SYSTEM = ("Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement "
          "of objects, and the action and pose of persons. Based on your observations, select the best option that "
          "accurately addresses the question.\n")


def notebook_indices(bound: tuple[float, float] | None, fps: float, max_frame: int, first_idx: int,
                     num_segments: int) -> np.ndarray:
    """The official loader's `get_index`: start = max(first_idx, round(start * fps)), end = min(round(end * fps),
    max_frame), seg = (end - start) / n, index i = int(start + seg / 2 + round(seg * i)) (whole video: no bound)."""
    start, end = bound if bound else (-100000, 100000)
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg = float(end_idx - start_idx) / num_segments
    return np.array([int(start_idx + seg / 2 + np.round(seg * i)) for i in range(num_segments)], dtype=np.int64)


class MVBench(Benchmark):
    name = "mvbench"
    default_annotation = "json"
    video_root = "video"
    letters = "ABCDE"
    settings = {"official": Settings(512, sampler="mvbench", max_new_tokens=100),
                "release": Settings(512, sampler="mvbench")}
    official_system = SYSTEM
    official_priming = "Best option:("
    official_rule = "mvbench"
    official_rule_text = ("MVBench official: check_ans on '(' + the reply's first line (primed with 'Best option:('): "
                          "its first token without dots inside '(x)' or containing it; an empty reply is right; "
                          "errors wrong; headline Avg = pooled accuracy (also per task)")
    release_note = ("no system prompt or priming, 'A.' option lines and the release rule (an empty reply is wrong, "
                    "official: right)")

    def load(self, data_dir: Path, annotation: Path | None = None) -> list[Question]:
        path = self.annotation_path(data_dir, annotation)
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        if not files:
            raise AnnotationError(f"{path}: no MVBench task files (*.json)")
        questions = []
        for file in files:
            rows = read_json(file)
            if not isinstance(rows, list):
                raise AnnotationError(f"{file}: expected a JSON list of questions, got {type(rows).__name__}")
            for i, row in enumerate(rows):
                try:
                    questions.append(self._question(row, file.stem, i, f"{file} record {i}"))
                except AnnotationError as e:
                    questions.append(self.broken(f"{file.stem}_{i}", e))
        check_unique(questions, str(path))
        return questions

    def _question(self, row: Any, task: str, i: int, where: str) -> Question:
        require(row, ("video", "question", "candidates", "answer"), where)
        options = row["candidates"]
        if not isinstance(options, list) or not 1 <= len(options) <= len(self.letters):
            raise AnnotationError(f"{where}: field 'candidates' must be a list of 1-{len(self.letters)} strings")
        options, answer = [str(o) for o in options], str(row["answer"])
        bounds = None
        if task in BOUNDED:
            require(row, ("start", "end"), where)
            bounds = float(row["start"]), float(row["end"])
        folder = TASK_DIRS.get(task)
        video = f"{self.video_root}/{folder}/{row['video']}" if folder else f"{self.video_root}/{row['video']}"
        warning = None if answer in options else f"answer {answer!r} matches no candidate (gold '@': wrong)"
        extra = warn({"frames_fps": FRAME_TASKS[task]} if task in FRAME_TASKS else {}, where, warning)
        return Question(qid=f"{task}_{i}", video=video, question=str(row["question"]), options=options,
                        answer=gold_from_text(answer, options, last=True), categories={"task": [task]}, extra=extra,
                        start=bounds[0] if bounds else None, end=bounds[1] if bounds else None)

    def sampler(self, q: Question, settings: Settings, frames: int):
        if settings.sampler != "mvbench":
            return super().sampler(q, settings, frames)
        bound = (q.start, q.end) if q.start is not None and q.end is not None else None
        if q.extra.get("frames_fps"):  # files 00001.jpg .. = positions 0 .. in the folder
            return lambda total, fps: notebook_indices(bound, fps, total, 1, frames) - 1
        return lambda total, fps: notebook_indices(bound, fps, total - 1, 0, frames)

    def frame_spec(self, q: Question, settings: Settings) -> FrameSpec:
        spec = super().frame_spec(q, settings)
        return replace(spec, longest_edge=None) if q.extra.get("frames_fps") else spec  # frame folders: no pre-resize

    def official_prompt(self, q: Question) -> str:
        return SYSTEM + paren_options_prompt(q)

    def release_prompt(self, q: Question) -> str:
        options = "\n".join(f"{self.letters[k]}. {o}" for k, o in enumerate(q.options))
        return f"Question: {q.question}\n{options}\nAnswer with the option's letter from the given choices directly."


BENCHMARK = MVBench()
