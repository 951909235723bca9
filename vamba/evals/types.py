"""The benchmark interface: one `Question` type for every benchmark, and the `Benchmark` base class.

Why one type: the runner, the results file and the scorer must not know which benchmark they serve. Each benchmark
module turns its own annotation format (FORMATS.md) into `Question`s and declares, as class attributes, which
answer-extraction rule and which aggregation its *official* protocol uses; the base class does the rest, so a
benchmark module stays small and two benchmarks never disagree on how a shared step (letters, release rule,
pooled accuracy) is done.

Two scorings exist for every benchmark:

- ``official``: the benchmark's own protocol (its prompt, extractor and headline aggregation, FORMATS.md);
- ``release``: the Vamba release's protocol (its prompt where FORMATS.md gives it, the release extractor, pooled
  accuracy with unparsed answers counted wrong), so numbers compare with the paper.

Paths: `Question.video` / `Question.subtitles` are relative to the benchmark's *data dir* (they include
`Benchmark.video_root`) or absolute. Loaders never check that videos exist (the runner records a missing video per
question); they only use the file system to pick between documented layout variants.

Malformed annotation files raise `AnnotationError` naming the file and the line or record.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vamba.data.annotations import AnnotationError, read_jsonl
from vamba.evals import answer as answer_rules
from vamba.evals import scoring as scoring_lib

logger = logging.getLogger(__name__)

SCORINGS: tuple[str, ...] = ("official", "release")
#: Vamba's instruction head, shared by its LVBench / HourVideo / Video-MME scripts.
VAMBA_HEAD = "Select the best answer to the following multiple-choice question based on the video."

__all__ = ["SCORINGS", "VAMBA_HEAD", "AnnotationError", "Benchmark", "Question", "answer_from_text", "check_scoring",
           "check_unique", "letter_list", "load_warnings", "option_lines", "read_json", "read_json_lenient",
           "read_jsonl", "require", "vamba_prompt", "warn"]


@dataclass
class Question:
    """One multiple-choice question, benchmark-independent.

    `question` has no options in it and `options` have no letters: prompts re-render both, so a benchmark's
    official layout and the release layout come from the same parsed data. `answer` is the gold letter, or None
    when hidden (test splits) or unrecoverable (a loader warning in `extra["load_warning"]`); such questions are
    answered but not scored. `categories` maps every grouping the benchmark reports to this question's labels
    (a list: LVBench questions are multi-label and count in each of their categories).
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


def answer_from_text(answer: str, options: list[str], letters: str) -> tuple[str | None, str | None]:
    """(letter, warning) for a gold answer given as option TEXT (MLVU, MVBench).

    The candidate equal to it; else the one candidate equal ignoring case and whitespace; else (None, warning): the
    question is still answered but cannot be scored, which is a data problem of one question, not of the file.
    """
    if answer in options:
        return letters[options.index(answer)], None
    norm = " ".join(answer.split()).lower()
    loose = [k for k, o in enumerate(options) if " ".join(o.split()).lower() == norm]
    if len(loose) == 1:
        return letters[loose[0]], None
    return None, f"answer {answer!r} matches no candidate (or several, ignoring case); question not scored"


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


def vamba_prompt(q: Question, letters: str) -> str:
    """Vamba's per-line layout (its HourVideo script; used where FORMATS.md gives no other Vamba text)."""
    return (f"{VAMBA_HEAD}\n{q.question}\n{option_lines(q.options)}\n"
            f"Respond with only the letter ({letter_list(letters)}) of the correct option.")


# --------------------------------------------------------------------------------------------------------------
# Benchmark


class Benchmark:
    """Base class: a benchmark module subclasses it, overrides `load` and `official_prompt`, sets the attributes.

    Official protocol attributes (the release protocol is fixed: release extractor, pooled, unparsed = wrong):

    - `official_rule`: a rule name of `vamba.evals.answer.RULES`;
    - `official_text_fallback`: if the rule finds no letter, accept a response naming exactly one option's text;
    - `official_unparsed`: 'wrong' | 'exclude' (drop from the denominator) | 'random' (seeded random option);
    - `official_headline`: 'pooled', or the name of a category group whose per-category accuracies are averaged
      with equal weight (macro mean, e.g. MLVU's M-Avg over tasks);
    - `official_rule_text`: a human-readable description of the above for the report.
    """

    name: str = ""
    default_annotation: str = ""
    video_root: str = ""
    letters: str = "ABCD"
    official_rule: str = "lmms"
    official_text_fallback: bool = False
    official_unparsed: str = "wrong"
    official_headline: str = "pooled"
    official_rule_text: str = ""

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

    # --- prompting -----------------------------------------------------------------------------------------
    def letters_for(self, q: Question) -> str:
        """The letters valid for this question (MVBench has 2-5 options, LongVideoBench 4-5)."""
        return self.letters[: len(q.options)] if q.options else self.letters

    def prompt(self, q: Question, scoring: str = "official", subtitles: str | None = None) -> str:
        """The user text that follows the video."""
        check_scoring(scoring)
        if scoring == "release":
            return self.release_prompt(q)
        return self.official_prompt(q, subtitles)

    def official_prompt(self, q: Question, subtitles: str | None = None) -> str:
        raise NotImplementedError

    def release_prompt(self, q: Question) -> str:
        """Vamba's prompt; benchmarks whose Vamba script used another layout override this."""
        return vamba_prompt(q, self.letters_for(q))

    def system_prompt(self, scoring: str = "official") -> str | None:
        """A system message, where the official protocol has one (MLVU, MVBench)."""
        check_scoring(scoring)
        return None

    def response_prefix(self, scoring: str = "official") -> str:
        """Text the assistant reply is primed with ('' for none); the model continues after it."""
        check_scoring(scoring)
        return ""

    def generation_kwargs(self, scoring: str = "official") -> dict[str, Any]:
        """Sampling settings of the protocol (Vamba decodes greedily except on HourVideo)."""
        check_scoring(scoring)
        return {"do_sample": False}

    # --- scoring -------------------------------------------------------------------------------------------
    def rule(self, scoring: str) -> str:
        check_scoring(scoring)
        return "release" if scoring == "release" else self.official_rule

    def extract(self, response: str, q: Question, scoring: str = "official") -> str | None:
        """The answered letter, or None. `response` is the model's continuation after `response_prefix`; a
        response that still starts with the prefix has it removed first."""
        if response is None:
            return None
        prefix = self.response_prefix(scoring)
        if prefix and response.lstrip().startswith(prefix):
            response = response.lstrip()[len(prefix):]
        letters = self.letters_for(q)
        letter = answer_rules.extract_letter(response, letters, self.rule(scoring))
        if letter is None and scoring == "official" and self.official_text_fallback:
            letter = answer_rules.match_option_text(response, q.options)
        return letter

    def aggregate(self, records: list[dict[str, Any]], scoring: str = "official", seed: int = 0) -> dict[str, Any]:
        """Accuracy summary of per-question records (`qid`, `letter`, `answer`, `categories`, `error`; `options`
        or `num_options` when the random fallback needs the option count)."""
        check_scoring(scoring)
        if scoring == "release":
            unparsed, headline = "wrong", "pooled"
            rule = ("Vamba release: letter after the last 'the answer is' / 'answer:' / 'the option is', first "
                    "alphabetic character; unparsed and errors count wrong; pooled accuracy")
        else:
            unparsed, headline, rule = self.official_unparsed, self.official_headline, self.official_rule_text
        return scoring_lib.summarize(records, benchmark=self.name, scoring=scoring, rule=rule, unparsed=unparsed,
                                     headline=headline, seed=seed, letters=self.letters)

    def __repr__(self) -> str:
        return f"<Benchmark {self.name}>"


def check_scoring(scoring: str) -> None:
    if scoring not in SCORINGS:
        raise ValueError(f"unknown scoring {scoring!r}; expected one of {', '.join(SCORINGS)}")
