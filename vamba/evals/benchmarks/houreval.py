"""HourEval: the paper's third hour-level column, the hour-long parts of Video-MME, MLVU and LongVideoBench scored
together (docs/protocols.md §8; the release's `eval/eval_houreval.py`).

It is not a published dataset, so this module owns no loader, prompt or answer rule of its own: it composes the three
member benchmarks (`members`). Each member reads its own data folder in that benchmark's own layout with its own
loader (`vamba eval benchmark=houreval data_dirs.videomme=... data_dirs.mlvu=... data_dirs.longvideobench=...`);
the runner hands each question to its member (`Benchmark.parts` / `part_of`), which reads its frames, prompts,
extracts and gives its gold exactly as `benchmark=<member>` does. HourEval selects the questions and pools the
scores. Question ids are ``<member>/<the member's id>``; video and subtitle paths are absolute (members have
different data folders).

Subsets. The release reads filtered files it never published; each is used when present in the member's folder:
Video-MME `videomme/test-00000-of-00001-filtered.parquet`, MLVU `filtered_json/` (only `2_needle.json`,
`4_count.json`, `5_order.json`, `6_anomaly_reco.json`), LongVideoBench `lvb_val_filtered.json`. Otherwise (and when
`annotations.<member>=` names a member's full annotation) the duration rule `RULE` builds the subset from the full
file (MLVU: its four task files in `json/`): the questions on videos longer than 15 minutes, read from each
benchmark's own duration field, or from the video file's length where a record has none. Why 15 minutes: it is the
boundary of the longest duration class of both members that define one, so the rule takes their own long parts
instead of inventing a cut: Video-MME's `duration` label "long" is its 30-60 min class (its "medium" class ends at
15 min, and no video lies between), and LongVideoBench's `duration` > 900 s is exactly its longest `duration_group`,
3600 (the 15-60 min videos); a 30-minute cut would keep half of that group. MLVU has no class; the same 15 minutes
applies to its `duration`. A question whose duration cannot be told (a record that failed to load, no duration
field and no readable video) is left out and counted. The source, rule and per-member question counts (with a
digest of the selected ids) are printed at start-up and written into `run.json` (a resumed run cannot mix two
HourEvals), `summary.json` and `report.md`, so a score always says which HourEval it is.

Protocols. ``release`` (§8): every member at 512 frames (linspace), longest edge 480, shortest 256, no subtitles,
512 new tokens greedy, its release prompt, the release answer rule; per member pooled, and the HourEval figure pooled
over all questions of the members (not the mean of the member accuracies). ``official``: each member's own official
evaluation (its prompt, frame sampler, generation length, extraction, unparsed policy and headline), the members
side by side, plus the pooled figure: the members' counted correct answers over their counted questions together.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from vamba.evals.benchmark import AnnotationError, Benchmark, Question, check_unique
from vamba.evals.benchmarks.longvideobench import BENCHMARK as LONGVIDEOBENCH
from vamba.evals.benchmarks.mlvu import BENCHMARK as MLVU
from vamba.evals.benchmarks.videomme import BENCHMARK as VIDEOMME
from vamba.evals.protocol import Settings, check_protocol
from vamba.evals.scoring import Tally, latest_by_qid

from ...modeling.errors import UsageError

logger = logging.getLogger(__name__)

#: The release's MLVU tasks (docs/protocols.md §8): needle, count, order, anomaly recognition.
MLVU_TASKS: tuple[str, ...] = ("2_needle", "4_count", "5_order", "6_anomaly_reco")
#: The release's filtered member files, relative to each member's data folder (MLVU: a folder of task files).
FILTERED: dict[str, str] = {"videomme": "videomme/test-00000-of-00001-filtered.parquet", "mlvu": "filtered_json",
                            "longvideobench": "lvb_val_filtered.json"}
#: The default rule's cut: videos longer than this many seconds (15 minutes).
MIN_SECONDS = 900.0
RULE = ("questions on videos longer than 15 min (900 s), by each benchmark's own duration field: Video-MME duration "
        "'long' (its 30-60 min class; 'medium' ends at 15 min), LongVideoBench duration > 900 s (= its longest "
        "duration_group, 3600), MLVU duration > 900 s in its tasks 2_needle, 4_count, 5_order, 6_anomaly_reco; a "
        "record without a duration: the video file's length; undecidable questions are left out and counted")
RELEASE_RULE = ("Vamba release (docs/protocols.md §8): each member's release prompt, the release answer rule for every "
                "question; unparsed and errors count wrong; HourEval = correct/total pooled over all questions of the "
                "members (not the mean of the member accuracies)")
OFFICIAL_RULE = ("each member's own official evaluation (Video-MME: extract_characters_regex, unparsed left out; "
                 "MLVU: check_ans, headline M-Avg over its tasks; LongVideoBench: the authors' scorer, a seeded "
                 "random option when unparsed); HourEval = the members' counted correct answers over their counted "
                 "questions, pooled; each member's own headline below")


def _seconds(value: Any) -> float | None:
    """A duration field as seconds, or None when absent or not a number."""
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


def video_seconds(path: Path) -> float | None:
    """The length of a video file in seconds (the rule's fallback), or None when it cannot be read."""
    from vamba.data.frames import FrameSpec
    from vamba.data.video import VideoReadError, load_video

    try:  # one frame decoded: the length comes from the container's metadata
        return float(load_video(path, FrameSpec(sampler=lambda total, fps: [0]), resize=False).duration)
    except (VideoReadError, ValueError, OSError) as e:
        logger.warning("%s: cannot read the video's length (%s)", path, e)
        return None


def _relative(root: Path, path: Path) -> str:
    try:
        return str(Path(os.path.abspath(path)).relative_to(root))
    except ValueError:
        return str(path)


def _digest(questions: list[Question]) -> str:
    """A short digest of the selected question ids, in order: two HourEvals with equal digests hold the same
    questions."""
    return hashlib.sha256("\n".join(q.qid for q in questions).encode()).hexdigest()[:12]


class HourEval(Benchmark):
    name = "houreval"
    letters = "ABCDE"
    members: dict[str, Benchmark] = {"videomme": VIDEOMME, "mlvu": MLVU, "longvideobench": LONGVIDEOBENCH}
    #: docs/protocols.md §8: the release's settings, the same for all three members (each member's release settings).
    settings = {"release": Settings(512)}

    def protocol_settings(self, protocol: str) -> Settings:
        if check_protocol(protocol) == "official":
            raise UsageError("HourEval's official protocol reads each member with that member's own settings "
                             "(HourEval.parts()[member].protocol_settings('official'))")
        return self.settings["release"]

    def part_of(self, q: Question) -> str:
        member = q.extra.get("member")
        if member not in self.members:
            raise ValueError(f"question {q.qid!r} names no HourEval member")
        return member

    # --- loading -------------------------------------------------------------------------------------------
    def load(self, data_dir: Path, annotation: Path | None = None) -> list[Question]:
        raise UsageError("HourEval reads one data folder per member: load_members({member: folder}); on the command "
                         "line data_dirs.videomme=... data_dirs.mlvu=... data_dirs.longvideobench=...")

    def load_members(self, data_dirs: dict[str, Path],
                     annotations: dict[str, Path] | None = None) -> tuple[list[Question], dict[str, Any]]:
        """The questions of the members given (`data_dirs`: member -> its data folder; `annotations`: member -> its
        full annotation, relative to that folder or absolute, read with the duration rule) and the selection: the
        rule, and per member the source file, question, video and left-out counts and a digest of the ids."""
        annotations = annotations or {}
        unknown = sorted(set(data_dirs) - set(self.members)) + sorted(set(annotations) - set(data_dirs))
        if unknown:
            raise UsageError(f"HourEval: no data folder for {', '.join(unknown)} (members: "
                             f"{', '.join(self.members)})")
        questions: list[Question] = []
        blocks: dict[str, dict[str, Any]] = {}
        for name in self.members:
            if name in data_dirs:
                kept, blocks[name] = self._member(name, Path(os.path.abspath(data_dirs[name])), annotations.get(name))
                questions += kept
        check_unique(questions, "houreval")
        selection = {"benchmark": self.name, "rule": RULE, "members": blocks, "questions": len(questions),
                     "left_out_members": [m for m in self.members if m not in data_dirs]}
        return questions, selection

    def _member(self, name: str, root: Path, annotation: Path | None) -> tuple[list[Question], dict[str, Any]]:
        bench = self.members[name]
        filtered = root / FILTERED[name]
        use_filtered = annotation is None and filtered.exists()
        path = filtered if use_filtered else bench.annotation_path(root, annotation)
        loaded = self._mlvu(root, path) if name == "mlvu" else bench.load(root, path)
        if use_filtered:
            kept, undecided = loaded, []
        else:
            verdicts = [(q, self._hour_long(name, root, q)) for q in loaded]
            kept = [q for q, long in verdicts if long]
            undecided = [q.qid for q, long in verdicts if long is None]
            if undecided:
                logger.warning("houreval: %d %s question(s) left out, their duration unknown (first: %s)",
                               len(undecided), name, ", ".join(undecided[:5]))
        tagged = [self._tag(name, root, q) for q in kept]
        block = {"source": ("filtered file " if use_filtered else "duration rule on ") + _relative(root, path),
                 "filtered": use_filtered, "questions": len(tagged), "videos": len({q.video for q in tagged}),
                 "in_file": len(loaded), "undecided": len(undecided), "load_errors": sum(bool(q.error) for q in tagged),
                 "ids_sha256": _digest(tagged)}
        return tagged, block

    @staticmethod
    def _mlvu(root: Path, folder: Path) -> list[Question]:
        """MLVU's four HourEval tasks from a folder of task files (the other three are never read)."""
        if not folder.is_dir():
            raise AnnotationError(f"{folder}: HourEval's MLVU member needs a folder of task files "
                                  f"({', '.join(f'{t}.json' for t in MLVU_TASKS)})")
        absent = [f"{t}.json" for t in MLVU_TASKS if not (folder / f"{t}.json").exists()]
        if absent:
            raise AnnotationError(f"{folder}: missing MLVU task file(s) {', '.join(absent)}")
        questions = [q for t in MLVU_TASKS for q in MLVU.load(root, folder / f"{t}.json")]
        check_unique(questions, str(folder))
        return questions

    @staticmethod
    def _hour_long(name: str, root: Path, q: Question) -> bool | None:
        """Whether the question's video is longer than 15 minutes under `RULE`; None when that cannot be told."""
        if q.error:
            return None
        if name == "videomme":
            label = q.categories.get("duration")
            return label[0] == "long" if label else None
        seconds = _seconds(q.extra.get("duration"))
        if seconds is None:
            seconds = video_seconds(root / q.video)
        return None if seconds is None else seconds > MIN_SECONDS

    @staticmethod
    def _tag(name: str, root: Path, q: Question) -> Question:
        """The member's question under HourEval: id prefixed by the member, paths absolute (a question that failed
        to load keeps the member's folder as its 'video', so it never groups with another member's)."""
        return replace(q, qid=f"{name}/{q.qid}", video=str(root / q.video),
                       subtitles=str(root / q.subtitles) if q.subtitles else None, extra={**q.extra, "member": name})

    # --- scoring -------------------------------------------------------------------------------------------
    def aggregate(self, records: list[dict[str, Any]], protocol: str = "official", seed: int = 0) -> dict[str, Any]:
        """Each member's own aggregate of its records (in annotation order) side by side, and the pooled figure:
        the members' counted correct answers over their counted questions (release: all questions)."""
        protocol = check_protocol(protocol)
        split: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            member = str(r["qid"]).partition("/")[0]
            if member not in self.members:
                raise ValueError(f"result {r['qid']!r} names no HourEval member ({', '.join(self.members)})")
            split.setdefault(member, []).append(r)
        blocks = {m: {**self.members[m].aggregate(split[m], protocol, seed=seed),
                      "questions": len(latest_by_qid(split[m]))} for m in self.members if m in split}
        pooled = Tally(correct=sum(b["overall"]["correct"] for b in blocks.values()),
                       total=sum(b["overall"]["total"] for b in blocks.values()))
        return {
            "benchmark": self.name, "scoring": protocol, "protocol": protocol,
            "rule": RELEASE_RULE if protocol == "release" else OFFICIAL_RULE,
            "headline": pooled.accuracy, "overall": pooled.block(),
            "groups": {"member": {m: b["overall"] for m, b in blocks.items()}},
            **{k: sum(b[k] for b in blocks.values()) for k in ("unparsed", "errors", "unscored")},
            "questions": sum(b["questions"] for b in blocks.values()), "members": blocks, "plot_group": "member",
        }

    def official_prompt(self, q: Question) -> str:
        return self.members[self.part_of(q)].official_prompt(q)

    def release_prompt(self, q: Question) -> str:
        return self.members[self.part_of(q)].release_prompt(q)


BENCHMARK = HourEval()
