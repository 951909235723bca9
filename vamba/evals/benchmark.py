"""The benchmark interface: one `Question` type for every benchmark, and the `Benchmark` base class.

Why one type: the runner, the results file and the scorer must not know which benchmark they serve. Each benchmark
module turns its own annotation format (docs/protocols.md) into `Question`s and declares what its two protocols fix
(`vamba.evals.protocol`): per protocol the input settings, the prompt (system prompt, user text, answer priming),
the gold letter, the answer rule, how an unparsed reply counts and the headline aggregation. The base class does the
rest, so a benchmark module stays small and two benchmarks never disagree on a shared step.

- ``official``: the benchmark's own evaluation (docs/protocols.md, "Official");
- ``release``: the Vamba release's evaluation, byte for byte (docs/protocols.md, "Release"): the prompt of its script
  for that benchmark, the release answer rule, pooled accuracy with unparsed replies counted wrong.

Paths: `Question.video` / `Question.subtitles` are relative to the benchmark's *data dir* (they include
`Benchmark.video_root`) or absolute. Loaders never check that videos exist (the runner records a missing video per
question); they only use the file system to pick between documented layout variants.

A composite benchmark (HourEval) sets `members`: it loads one data folder per member (`load_members`) and the
runner hands each question to its member (`parts`, `part_of`), which reads, prompts and scores it as it would alone.

A malformed annotation *file* raises `AnnotationError` naming the file and the line or record. A malformed *record*
(a field missing or invalid) becomes a question with `error` set, naming file, record and field: the runner writes
it as an error (wrong, listed in the report) and the run goes on.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vamba.data.annotations import AnnotationError, read_jsonl
from vamba.data.frames import FrameSpec
from vamba.data.prompts import RESPOND_ABCD, VAMBA_HEAD
from vamba.evals import answer as answer_rules
from vamba.evals import scoring as scoring_lib
from vamba.evals.protocol import PROTOCOLS, Settings, check_protocol

logger = logging.getLogger(__name__)

#: Kept for callers of the old name (`scoring=` is now `protocol=`).
SCORINGS = PROTOCOLS
#: The gold letter of a question whose answer text matches no candidate: never equal to a reply's letter.
NO_GOLD = "@"

__all__ = ["NO_GOLD", "drop_odd", "PROTOCOLS", "RESPOND_ABCD", "SCORINGS", "VAMBA_HEAD", "AnnotationError", "Benchmark",
           "Question", "check_scoring", "check_unique", "gold_from_text", "letter_list", "load_warnings",
           "option_lines", "read_json", "read_json_lenient", "read_jsonl", "require", "warn"]


@dataclass
class Question:
    """One multiple-choice question, benchmark-independent.

    `question` has no options in it and `options` have no letters: prompts re-render both (a benchmark keeps the
    file's own text in `extra` where a protocol shows it verbatim). `answer` is the gold letter, or None when hidden
    (test splits); benchmarks whose gold is an option TEXT derive the letter per protocol (`Benchmark.gold`).
    `categories` maps every grouping the benchmark reports to this question's labels (a list: LVBench questions are
    multi-label and count in each of their categories). `error` marks a record that could not be loaded.
    """

    qid: str
    video: str
    question: str
    options: list[str]
    answer: str | None
    categories: dict[str, list[str]]
    start: float | None = None
    end: float | None = None
    subtitles: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def load_warnings(questions: list[Question]) -> list[str]:
    """The loader warnings attached to questions (e.g. an MLVU answer text matching no candidate)."""
    return [f"{q.qid}: {q.extra['load_warning']}" for q in questions if q.extra.get("load_warning")]


# --------------------------------------------------------------------------------------------------------------
# Reading annotation files (fail fast, naming file and line)


def read_json(path: Path) -> Any:
    """A strict JSON file; invalid JSON raises `AnnotationError` with the line number."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read annotation file ({e.strerror})") from None


def _drop_trailing_commas(text: str) -> str:
    """Remove commas directly followed (after whitespace) by `}` or `]`, leaving string contents untouched."""
    out: list[str] = []
    in_string = escaped = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif c == ",":
            j = i + 1
            while j < n and text[j] in " \t\r\n":
                j += 1
            if j >= n or text[j] not in "}]":
                out.append(c)
        else:
            out.append(c)
        i += 1
    return "".join(out)


def read_json_lenient(path: Path) -> Any:
    """JSON that may have trailing commas (Video-MME's official `output_test_template.json` has them).

    Removing a comma never changes line numbers, so errors still point at the right line.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read annotation file ({e.strerror})") from None
    try:
        return json.loads(_drop_trailing_commas(text))
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def require(row: Any, keys: tuple[str, ...], where: str) -> None:
    """Fail fast unless `row` is an object holding every key."""
    if not isinstance(row, dict):
        raise AnnotationError(f"{where}: expected an object, got {type(row).__name__}")
    missing = [k for k in keys if k not in row]
    if missing:
        raise AnnotationError(f"{where}: missing field(s) {', '.join(missing)}")


def check_unique(questions: list[Question], where: str) -> None:
    """Question ids key the results file, so a duplicate would silently overwrite an answer."""
    seen: set[str] = set()
    for q in questions:
        if q.qid in seen:
            raise AnnotationError(f"{where}: duplicate question id {q.qid!r}")
        seen.add(q.qid)


def gold_from_text(answer: str, options: list[str], last: bool) -> str:
    """The gold letter of an answer given as option TEXT (MLVU, MVBench): the candidate exactly equal to it (the
    first or the `last` of equal ones: the official MLVU/MVBench loops keep the last, the release's MLVU script the
    first), or `NO_GOLD` when none is equal (counted, never correct, as in both)."""
    hits = [k for k, o in enumerate(options) if o == answer]
    return answer_rules.LETTERS[hits[-1] if last else hits[0]] if hits else NO_GOLD


def warn(extra: dict[str, Any], where: str, warning: str | None) -> dict[str, Any]:
    """Attach a loader warning (if any) to a question's `extra` and log it; returns `extra`."""
    if warning:
        logger.warning("%s: %s", where, warning)
        extra["load_warning"] = f"{where}: {warning}"
    return extra


# --------------------------------------------------------------------------------------------------------------
# Prompt pieces


def letter_list(letters: str) -> str:
    """'ABCD' -> 'A, B, C, or D' (the wording of Vamba's and Video-MME's instruction)."""
    if len(letters) == 1:
        return letters
    return ", ".join(letters[:-1]) + f", or {letters[-1]}"


def option_lines(options: list[str], style: str = "dot", sep: str = "\n") -> str:
    """Lettered options: style 'dot' -> 'A. x', 'paren' -> '(A) x'."""
    letters = answer_rules.LETTERS
    if style == "dot":
        return sep.join(f"{letters[i]}. {o}" for i, o in enumerate(options))
    if style == "paren":
        return sep.join(f"({letters[i]}) {o}" for i, o in enumerate(options))
    raise ValueError(f"unknown option style {style!r}")


# --------------------------------------------------------------------------------------------------------------
# Benchmark


def drop_odd(indices: Any) -> Any:
    """The released model's processor pairs frames and drops the last of an odd count."""
    return indices[: len(indices) - len(indices) % 2]


class Benchmark:
    """Base class: a benchmark module subclasses it, overrides `load`, the two prompts, and sets the attributes.

    - `settings`: protocol -> `Settings` (frames, sampler, pre-resize, generation);
    - `official_system` / `official_priming`: the official system prompt and the text the reply is primed with
      (the release has neither: the qwen2 default system prompt, no priming);
    - `official_rule`: a rule of `vamba.evals.answer.RULES` (the release protocol always uses ``release``);
    - `official_unparsed`: 'wrong' | 'exclude' (left out of the denominator) | 'random' (a random option);
    - `official_headline`: 'pooled', or a category group whose accuracies are averaged with equal weight;
    - `official_rule_text` / `release_note`: what the report says of each protocol (the note states where the
      release departs from the official evaluation).
    """

    name: str = ""
    default_annotation: str = ""
    video_root: str = ""
    letters: str = "ABCD"
    settings: dict[str, Settings] = {}
    official_system: str | None = None
    official_priming: str = ""
    official_rule: str = "release"
    official_unparsed: str = "wrong"
    official_headline: str = "pooled"
    official_rule_text: str = ""
    release_note: str = ""
    #: A benchmark made of others (HourEval): member name -> benchmark. Each member reads its own data folder
    #: (`load_members`) and reads, prompts and scores its own questions (`parts`, `part_of`); the composite
    #: selects the questions and aggregates.
    members: dict[str, Benchmark] = {}

    # --- composition ---------------------------------------------------------------------------------------
    def parts(self) -> dict[str, Benchmark]:
        """The benchmarks that read, prompt and score this one's questions: its members, or itself."""
        return dict(self.members) or {self.name: self}

    def part_of(self, q: Question) -> str:
        """The key in `parts()` of the benchmark that reads, prompts and scores `q`."""
        return self.name

    def load_members(self, data_dirs: dict[str, Path],
                     annotations: dict[str, Path] | None = None) -> tuple[list[Question], dict[str, Any]]:
        """A composite benchmark's questions from one data folder per member, and a description of the selection
        (written into the run's records and report)."""
        raise NotImplementedError(f"{self.name} is not made of member benchmarks: use load(data_dir)")

    # --- loading -------------------------------------------------------------------------------------------
    def annotation_path(self, data_dir: Path, annotation: Path | None = None) -> Path:
        """The default annotation under the data dir, or `annotation`: absolute, else relative to the data dir if
        it exists there (so `Path("val.csv")` picks a split), else as given (relative to the working directory)."""
        if annotation is None:
            return Path(data_dir) / self.default_annotation
        annotation = Path(annotation)
        if annotation.is_absolute() or not (Path(data_dir) / annotation).exists():
            return annotation
        return Path(data_dir) / annotation

    def load(self, data_dir: Path, annotation: Path | None = None) -> list[Question]:
        """Parse the annotation file(s) into questions (AnnotationError on a malformed file)."""
        raise NotImplementedError

    @staticmethod
    def broken(qid: str, error: Exception | str, video: str = "") -> Question:
        """The question of a record that could not be loaded (the runner writes it as an error)."""
        logger.warning("%s", error)
        return Question(qid=qid, video=video, question="", options=[], answer=None, categories={}, error=str(error))

    # --- protocol settings ---------------------------------------------------------------------------------
    def protocol_settings(self, protocol: str) -> Settings:
        return self.settings[check_protocol(protocol)]

    def sampler(self, q: Question, settings: Settings, frames: int) -> Callable[[int, float], Any] | None:
        """The benchmark's own frame sampler `(num_total_frames, fps) -> indices` for `settings.sampler`, or None
        for the video loader's own modes (``linspace``: the release's; ``uniform``). Raises AnnotationError when
        the question lacks a field the sampler needs."""
        if settings.sampler not in ("linspace", "uniform"):
            raise NotImplementedError(f"{self.name} has no {settings.sampler!r} sampler")
        return None

    def frame_spec(self, q: Question, settings: Settings) -> FrameSpec:
        """The protocol's frames of a question's video: count, sampler and pre-resize (pixel bounds left unset)."""
        sampler = self.sampler(q, settings, settings.frames)
        return FrameSpec(mode=None if sampler else settings.sampler, count=settings.frames,
                         sampler=(lambda total, fps: drop_odd(sampler(total, fps))) if sampler else None,
                         longest_edge=settings.longest_edge, shortest_edge=settings.shortest_edge)

    def subtitle_text(self, q: Question, data_dir: Path, indices: Any, fps: float) -> str | None:
        """The subtitle text the protocol feeds with these frames, or None (no subtitle file for this question).
        Raises `vamba.evals.subtitles.SubtitleError` for a file that does not parse."""
        return None

    # --- prompting -----------------------------------------------------------------------------------------
    def letters_for(self, q: Question) -> str:
        """The letters valid for this question (MVBench has 1-5 options, LongVideoBench 4-5)."""
        return self.letters[: len(q.options)] if q.options else self.letters

    def prompt(self, q: Question, protocol: str = "official", subtitles: str | None = None) -> str:
        """The user text that follows the video; `subtitles` (already formatted lines) go before it."""
        body = self.release_prompt(q) if check_protocol(protocol) == "release" else self.official_prompt(q)
        return self.subtitle_block(subtitles) + body if subtitles else body

    def subtitle_block(self, subtitles: str) -> str:
        """How subtitle lines precede the prompt (benchmarks with subtitles override)."""
        return f"{subtitles}\n"

    def official_prompt(self, q: Question) -> str:
        raise NotImplementedError

    def release_prompt(self, q: Question) -> str:
        raise NotImplementedError

    def system_prompt(self, protocol: str = "official") -> str | None:
        """A system message replacing the chat template's default one (official MLVU, MVBench), or None."""
        return self.official_system if check_protocol(protocol) == "official" else None

    def response_prefix(self, protocol: str = "official") -> str:
        """Text the assistant reply is primed with ('' for none); the model continues after it."""
        return self.official_priming if check_protocol(protocol) == "official" else ""

    # --- scoring -------------------------------------------------------------------------------------------
    def scorer(self, cfg: Any) -> Callable[..., dict[str, Any]] | None:
        """A judged benchmark's `(records, questions, out_dir, protocol) -> summary`, its judge checked now; or None."""
        return None

    def gold(self, q: Question, protocol: str) -> str | None:
        """The gold letter under the protocol (benchmarks whose gold is option text override)."""
        return q.answer

    def categories_for(self, q: Question, protocol: str) -> dict[str, list[str]]:
        """The category groups the protocol reports (NExT-QA's official table merges TP into TN)."""
        return q.categories

    def rule(self, protocol: str) -> str:
        return "release" if check_protocol(protocol) == "release" else self.official_rule

    def extract(self, response: str | None, q: Question, protocol: str = "official") -> str | None:
        """The letter(s) the reply gives under the protocol's rule, or None. `response` is the model's continuation
        after `response_prefix`; a response that repeats the prefix has it removed first."""
        if response is None:
            return None
        prefix = self.response_prefix(protocol)
        if prefix and response.lstrip().startswith(prefix):
            response = response.lstrip()[len(prefix):]
        return answer_rules.extract_letter(response, self.letters_for(q), self.rule(protocol), q.options)

    def aggregate(self, records: list[dict[str, Any]], protocol: str = "official", seed: int = 0) -> dict[str, Any]:
        """Accuracy summary of per-question records (`qid`, `letter`, `answer`, `categories`, `error`, and
        `num_options` where a random draw needs the option count), given in annotation order."""
        if check_protocol(protocol) == "release":
            unparsed, headline = "wrong", "pooled"
            rule = ("Vamba release: lower-cased reply, text after the last 'the answer is' / 'answer:' / 'the option "
                    "is', its first letter; unparsed and errors count wrong; pooled accuracy")
            if self.release_note:
                rule += f". Departs from the official evaluation: {self.release_note}"
        else:
            unparsed, headline, rule = self.official_unparsed, self.official_headline, self.official_rule_text
        return scoring_lib.summarize(records, benchmark=self.name, scoring=protocol, rule=rule, unparsed=unparsed,
                                     headline=headline, rng=random.Random(seed), letters=self.letters)

    def __repr__(self) -> str:
        return f"<Benchmark {self.name}>"


def check_scoring(scoring: str) -> None:
    """Kept for callers of the old name: `vamba.evals.protocol.check_protocol`."""
    check_protocol(scoring)
