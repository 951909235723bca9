"""The one answer extractor (`vamba.evals.answer`): each rule's reading of the typical reply shapes, pinned.

Why a table: a one-character change in an extraction rule moves benchmark numbers by points, so each rule's reading
is written down here, with the edge cases docs/protocols.md lists for the outside code it
reproduces (empty reply, "Answer: D", option text instead of a letter, lower case, a letter inside a word), and any
change to it must change this table on purpose. Exact prompts per benchmark and protocol: `test_protocols.py`.
"""

from __future__ import annotations

import pytest

from vamba.evals.answer import RULES, extract_letter, match_option_text
from vamba.evals.benchmark import Question
from vamba.evals.benchmarks import get_benchmark

ALL = ("release", "videomme", "longvideobench", "mlvu", "mvbench", "lvbench", "first_char", "mmmu", "priority")


def _row(text: str, **expected: str | None) -> list[tuple[str, str, str | None]]:
    return [(text, rule, letter) for rule, letter in expected.items()]


# (reply, rule, expected letters) with letters "ABCD" (docs/protocols.md's worked examples are marked "doc")
CASES = [
    # empty reply: wrong everywhere, except MVBench's check, where "(" is inside every "(x)" (doc)
    *_row("", release=None, videomme=None, longvideobench=None, mlvu=None, mvbench="ABCD", lvbench=None,
          first_char=None, mmmu=None, priority=None),
    # a letter alone
    *_row("B", release="B", videomme="B", longvideobench="B", mlvu="B", mvbench="B", lvbench="B", first_char="B",
          mmmu="B", priority="B"),
    # "Answer: D" (doc): LongVideoBench's list lacks "Answer:", so its first capital is the A of "Answer"
    *_row("Answer: D", release="D", videomme="D", longvideobench="A", mlvu=None, mvbench=None, lvbench="A",
          first_char="A", mmmu="D", priority="D"),
    # option text instead of a letter (doc): the release and Video-MME read the initial capital of "Berries"
    *_row("Berries.", release="B", videomme="B", longvideobench="B", mlvu=None, mvbench=None, lvbench="B",
          first_char="B", mmmu=None, priority=None),
    # lower case (doc): only the release, MVBench and the project's rule accept it
    *_row("b", release="B", videomme=None, longvideobench=None, mlvu=None, mvbench="B", lvbench=None,
          first_char=None, mmmu=None, priority="B"),
    # a letter inside a word (doc): Video-MME takes the first capital A-D anywhere
    *_row("Based on the video, the answer is C.", release="C", videomme="B", longvideobench="B", mlvu=None,
          mvbench=None, lvbench="B", mmmu="C", priority="C"),
    *_row("Definitely C", videomme="D", release="D", priority="C"),
    *_row("ABSOLUTELY sure it is C", release="A", videomme="A", priority="C", first_char="A"),
    # the release rule: after the LAST "the answer is"; "I think B" reads "i" (doc)
    *_row("I think B", release=None, videomme="B", mlvu=None, mvbench=None, lvbench=None, first_char=None),
    *_row("The answer is A, no wait, the answer is C for sure.", release="C", priority="C"),
    *_row("The best answer is: D", release=None, videomme="D", longvideobench="D", priority="D"),
    *_row("(B)", release="B", videomme="B", mlvu="B", mvbench="B", lvbench="B", mmmu="B"),
    *_row("(C) red", release="C", videomme="C", mlvu="C", mvbench="C", lvbench="C", first_char=None, mmmu="C"),
    # Video-MME: over 10 words without a capital A-D -> nothing; with one -> that one
    *_row("the video shows a person walking along a beach at sunset with a dog", videomme=None, release=None),
    *_row("looking at the video carefully i believe that option C fits best here", videomme="C"),
    # LongVideoBench deletes its own prefixes ("Best option:"), Video-MME's list has it fused with another
    *_row("Best option: D", longvideobench="D", videomme="B"),
    # MLVU check_ans: the character before the first ")", else the whole reply, exactly (doc)
    *_row("B) text", mlvu="B", mvbench="B"),
    *_row("The answer is (B)", mlvu="B", lvbench="B", release="B"),
    *_row("B.", mlvu=None, mvbench="B", mmmu="B"),
    *_row("b)", mlvu=None, mvbench="B"),
    *_row(" B", mlvu=None, first_char="B"),
    *_row(")", mlvu=None, mvbench=None),
    # MVBench check_ans on "(" + first line (doc)
    *_row("B)text", mvbench="B"),
    *_row("B.)", mvbench="B"),
    *_row("Option B", mvbench=None),
    *_row("B,", mvbench=None),
    *_row("AB", mvbench=None),
    *_row("B\nbecause A is wrong", mvbench="B"),
    # LVBench polish_answer: the text after the FIRST "(" (doc: "((B)" is wrong there)
    *_row("((B)", lvbench=None),
    *_row("(B) cat", lvbench="B"),
    # MMMU-style (lmms-eval NExT-QA): "(X)" > "X " > "X."; the last of several; "D)" finds nothing (doc)
    *_row("D)", mmmu=None),
    *_row("I choose A, no: B is it", mmmu="B"),
    # letters outside the question's options are never answers
    *_row("E", release=None, videomme=None, mlvu=None, mvbench=None, lvbench=None, first_char=None, mmmu=None,
          priority=None),
]


@pytest.mark.parametrize("text,rule,expected", CASES, ids=[f"{r}:{t[:30]!r}" for t, r, _ in CASES])
def test_extract_letter_table(text: str, rule: str, expected: str | None) -> None:
    assert extract_letter(text, "ABCD", rule) == expected


def test_table_covers_every_rule() -> None:
    assert set(RULES) == set(ALL)
    assert {rule for _, rule, _ in CASES} == set(ALL)


def test_letters_limit_the_answer() -> None:
    assert extract_letter("E", "ABCDE", "priority") == "E"
    assert extract_letter("The answer is E", "ABCDE", "release") == "E"
    assert extract_letter("C", "AB", "mvbench") is None  # an MVBench two-option question
    assert extract_letter("", "AB", "mvbench") == "AB"
    # LongVideoBench's scorer searches A-E whatever the question: E on a 4-option question is an answer (wrong)
    assert extract_letter("E", "ABCD", "longvideobench") == "E"
    assert extract_letter(None, "ABCD", "release") is None


def test_mmmu_reads_option_text_in_long_replies() -> None:
    options = [" to sleep", "to eat", "to play", "to greet the man ", "to hide"]
    assert extract_letter("the dog ran to the door to greet the man", "ABCDE", "mmmu", options) == "D"
    assert extract_letter("to greet the man", "ABCDE", "mmmu", options) is None  # 5 words or fewer: no text match


def test_unknown_rule() -> None:
    with pytest.raises(ValueError, match="known rules: release, videomme"):
        extract_letter("A", "ABCD", "nope")


def test_match_option_text() -> None:
    options = ["Desert", "Forest", "Ocean", "City"]
    assert match_option_text("Forest", options) == "B"
    assert match_option_text("  the FOREST.  ", options) == "B"
    assert match_option_text("It takes place in a forest near the sea", options) == "B"
    assert match_option_text("a forest by the ocean", options) is None  # two options named
    assert match_option_text("I don't know", options) is None
    assert match_option_text("", options) is None
    # a shorter option inside a longer named one does not make the reply ambiguous
    assert match_option_text("the dark red one", ["red", "dark red", "blue"]) == "B"
    assert match_option_text("red", ["red", "dark red", "blue"]) == "A"
    # whole words only: "cat" is not inside "category"
    assert match_option_text("a category", ["cat", "dog"]) is None


def test_benchmark_extract_uses_its_protocol() -> None:
    q = Question("q", "v.mp4", "Where?", ["Desert", "Forest", "Ocean", "City"], "B", {})
    mlvu, mvbench = get_benchmark("mlvu"), get_benchmark("mvbench")
    assert mlvu.extract("B) Forest", q, "official") == "B"
    assert mlvu.extract("Best Option: (B) Forest", q, "official") == "B"  # the priming echoed back
    assert mlvu.extract("B. Forest", q, "official") is None
    assert mlvu.extract("B. Forest", q, "release") == "B"
    assert mvbench.extract("", q, "official") == "ABCD" and mvbench.extract("", q, "release") is None
    synthetic = get_benchmark("synthetic")
    assert synthetic.extract("It was a forest.", q, "official") == "B"  # the project's option-text fallback
    assert synthetic.extract("It was a forest.", q, "release") is None
