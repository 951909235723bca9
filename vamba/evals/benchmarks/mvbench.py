"""MVBench: 20 short-video tasks x 200 questions, 2-5 candidates; headline Avg over tasks.

Files `json/<task>.json` (the default annotation is the `json` folder: every `*.json` in it, sorted; a single file
may be given). Each is a list of {`video`, `question`, `candidates`, `answer` (the correct candidate's text),
`start`/`end` (seconds, bounded tasks only)}. The answer text is mapped to a letter as for MLVU
(`types.answer_from_text`; no match -> `answer=None` with a loader warning).

Videos: `video/<source folder>/<video>` with the source folder of each task in the official evaluation
(`TASK_DIRS`; an unknown task reads `video/<video>`). Bounded tasks: the runner samples the frames only from
[start, end] (`load_video(start=, end=)`, frames round(start * fps) .. round(end * fps), as MVBench's loader),
and encodes each window once. Episodic Reasoning points at 3-fps frame folders (1-based frame files):
`extra["frames_fps"] = 3` makes the runner read the folder as a 3-fps video (`load_video(folder_fps=3)`).

Official: MVBench's system prompt, "Question/Options/(A) .." prompt, reply primed with "Best option:("; the first
token must be the letter. Headline Avg = unweighted mean over the tasks of their accuracies; with the official 200
questions per task it equals the pooled accuracy (also reported as `overall`). Release: Vamba's per-line layout.
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
FRAME_TASKS = {"episodic_reasoning": 3}


class MVBench(Benchmark):
    name = "mvbench"
    default_annotation = "json"
    video_root = "video"
    letters = "ABCDE"
    official_rule = "mvbench"
    official_headline = "task"
    official_rule_text = ("MVBench official: first token of the reply (primed with 'Best option:(') is the letter; "
                          "unparsed and errors wrong; headline Avg = unweighted mean of the task accuracies")

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
            task = file.stem
            folder = TASK_DIRS.get(task)
            for i, row in enumerate(rows):
                where = f"{file} record {i}"
                require(row, ("video", "question", "candidates", "answer"), where)
                options = row["candidates"]
                if not isinstance(options, list) or not 2 <= len(options) <= len(self.letters):
                    raise AnnotationError(f"{where}: 'candidates' must be a list of 2-{len(self.letters)} strings")
                options = [str(o) for o in options]
                answer, warning = answer_from_text(str(row["answer"]), options, self.letters)
                video = f"{self.video_root}/{folder}/{row['video']}" if folder else f"{self.video_root}/{row['video']}"
                extra = warn({"frames_fps": FRAME_TASKS[task]} if task in FRAME_TASKS else {}, where, warning)
                questions.append(Question(
                    qid=f"{task}_{i}", video=video, question=str(row["question"]), options=options, answer=answer,
                    categories={"task": [task]}, extra=extra,
                    start=float(row["start"]) if row.get("start") is not None else None,
                    end=float(row["end"]) if row.get("end") is not None else None))
        check_unique(questions, str(path))
        return questions

    def official_prompt(self, q: Question, subtitles: str | None = None) -> str:
        return f"Question: {q.question}\nOptions:\n{option_lines(q.options, 'paren')}\nOnly give the best option."

    def system_prompt(self, scoring: str = "official") -> str | None:
        super().system_prompt(scoring)
        if scoring == "release":
            return None
        return ("Carefully watch the video and pay attention to the cause and sequence of events, the detail and "
                "movement of objects, and the action and pose of persons. Based on your observations, select the "
                "best option that accurately addresses the question.")

    def response_prefix(self, scoring: str = "official") -> str:
        super().response_prefix(scoring)
        return "" if scoring == "release" else "Best option:("


BENCHMARK = MVBench()
