"""The one answer extractor (`vamba.evals.answer`) and every benchmark's prompt, pinned as snapshots.

Why a table: a one-character change in an extraction rule moves benchmark numbers by points, so each rule's reading
of the typical reply shapes is written down here and any change to it must change this table on purpose.
"""

from __future__ import annotations

import pytest

from vamba.evals.answer import RULES, extract_letter, match_option_text
from vamba.evals.benchmarks import get_benchmark, list_benchmarks
from vamba.evals.types import Question

ALL = ("release", "lmms", "videomme", "mlvu", "mvbench", "lvbench", "first_char")


def _row(text: str, **expected: str | None) -> list[tuple[str, str, str | None]]:
    return [(text, rule, letter) for rule, letter in expected.items()]


# (reply, rule, expected letter) with letters "ABCD"
CASES = [
    # a letter alone
    *_row("B", release="B", lmms="B", videomme="B", mlvu="B", mvbench="B", lvbench="B", first_char="B"),
    *_row("  B\n", release="B", lmms="B", videomme="B", mlvu="B", mvbench="B", lvbench="B", first_char="B"),
    # the sentence form
    *_row("The answer is (B).", release="B", lmms="B", videomme="B", mlvu="B", mvbench=None, lvbench="B",
          first_char=None),
    # letter + option text
    *_row("B. the cat", release="B", lmms="B", videomme="B", mlvu=None, mvbench="B", lvbench="B", first_char="B"),
    *_row("(C) red", release="C", lmms="C", videomme="C", mlvu="C", mvbench="C", lvbench="C", first_char=None),
    # lower case
    *_row("b", release="B", lmms="B", videomme=None, mlvu=None, mvbench="B", lvbench=None, first_char=None),
    *_row("answer: d", release="D", lmms="D", videomme=None, mlvu=None, mvbench=None, lvbench=None, first_char=None),
    # option text without a letter: no rule reads a letter from it (match_option_text is separate)
    *_row("Forest", release=None, lmms=None, videomme=None, mlvu=None, mvbench=None, lvbench=None, first_char=None),
    # no answer
    *_row("I don't know", release=None, lmms=None, videomme=None, mlvu=None, mvbench=None, lvbench=None,
          first_char=None),
    # the release rule reads the first alphabetic char: "i" -> not a letter
    *_row("I think B", release=None, lmms="B", videomme="B", mlvu=None, mvbench=None, lvbench=None, first_char=None),
    # capitals inside words: Video-MME (our reading) skips them; the release rule is faithfully naive
    *_row("ABSOLUTELY sure it is C", release="A", lmms="C", videomme="C", first_char="A"),
    *_row("Berries.", videomme=None, lmms=None),
    *_row("DEFINITELY NOT SURE", videomme=None),
    # Video-MME prefix deletion
    # ("the best answer is" does not contain "the answer is": the release rule reads "t", faithfully)
    *_row("The best answer is: D", videomme="D", lmms="D", release=None),
    *_row("Answer: C. Jade.", videomme="C", lmms="C", release="C", mlvu=None),
    # long rambling reply without a letter (> 10 words): Video-MME gives up; with a letter it reads it
    *_row("the video shows a person walking along a beach at sunset with a dog", videomme=None, lmms=None),
    *_row("Looking at the video carefully I believe that option C fits best here", videomme="C", lmms="C"),
    # MLVU: the char before the first ")"
    *_row("C) blue", mlvu="C", lmms="C", videomme="C", mvbench="C", release="C"),
    *_row("Best Option: (C) blue", mlvu="C"),
    *_row(") oops", mlvu=None),
    # lmms priorities: start > end > phrase > (X) > X. > X: > X) > X  > any; last occurrence within a format
    *_row("C. because B is wrong", lmms="C"),
    *_row("The answer is B, I mean D", lmms="D"),
    *_row("The answer is A, no wait, the answer is C for sure.", lmms="C", release="C"),
    *_row("Options (A) and (C) are both wrong, so I pick (B) in the end.", lmms="B"),
    *_row("Between A. and C. I would go with C. honestly", lmms="C"),
    *_row("Neither A: nor B: fits, well", lmms="B"),
    *_row("it is A or maybe D or so", lmms="D"),
    # letters outside the question's options are never answers
    *_row("E", release=None, lmms=None, videomme=None, mlvu=None, mvbench=None, lvbench=None, first_char=None),
    # empty
    *_row("", release=None, lmms=None, videomme=None, mlvu=None, mvbench=None, lvbench=None, first_char=None),
]


@pytest.mark.parametrize("text,rule,expected", CASES, ids=[f"{r}:{t[:30]!r}" for t, r, _ in CASES])
def test_extract_letter_table(text: str, rule: str, expected: str | None) -> None:
    assert extract_letter(text, "ABCD", rule) == expected


def test_table_covers_every_rule() -> None:
    assert set(RULES) == set(ALL)
    assert {rule for _, rule, _ in CASES} == set(ALL)


def test_letters_limit_the_answer() -> None:
    assert extract_letter("E", "ABCDE", "lmms") == "E"
    assert extract_letter("The answer is E", "ABCDE", "release") == "E"
    assert extract_letter("C", "AB", "videomme") is None  # MVBench two-option question
    assert extract_letter(None, "ABCD", "lmms") is None


def test_unknown_rule() -> None:
    with pytest.raises(ValueError, match="known rules: release, lmms"):
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


def _q(name: str) -> Question:
    return SAMPLES[name]


SAMPLES: dict[str, Question] = {
    "lvbench": Question("90001", "videos/xYz123AbCdE.mp4", "What colour is the goalkeeper's shirt?",
                        ["red", "green", "black", "white"], "B", {"question_type": ["entity recognition"]}),
    "synthetic": Question("1", "videos/syn_eval_00000.mp4", "What color was the triangle that appeared in the video?",
                          ["red", "green", "blue", "cyan"], "A", {"question_type": ["needle_color"]}),
    "hourvideo": Question("u/q1", "videos/u.mp4", "What will I most likely do next?",
                          ["wash a mug", "dry a pan", "cut bread", "open fridge", "sweep floor"], "B", {},
                          extra={"mcq_test": "A. wash a mug\nB. dry a pan\nC. cut bread\nD. open fridge\n"
                                             "E. sweep floor"}),
    "videomme": Question("901-2", "data/AbC.mp4", "How many planets are shown?", ["3.", "5.", "8.", "9."], "C", {}),
    "mlvu": Question("topic_reasoning_0", "video/topic_reasoning/demo_7.mp4", "What is the main setting of the video?",
                     ["Desert", "Forest", "Ocean", "City"], "B", {}),
    "longvideobench": Question("v_0", "videos/v.mp4", "What does the man hold?",
                               ["a cup", "a pen", "a phone", "a book", "a key"], "C", {}),
    "mvbench": Question("action_sequence_0", "video/x.mp4", "What happened after the person took the box?",
                        ["Opened the door.", "Sat on the bed.", "Put down the box."], "A", {}),
    "nextqa": Question("1234567890_4", "NExTVideo/0001/1234567890.mp4", "why did the dog run to the door",
                       ["to sleep", "to eat", "to play", "to greet the man", "to hide"], "D", {}),
}

VAMBA = "Select the best answer to the following multiple-choice question based on the video."
MLVU_SYSTEM = ("Carefully watch this video and pay attention to every detail. Based on your observations, select the "
               "best option that accurately addresses the question.")
MVBENCH_SYSTEM = ("Carefully watch the video and pay attention to the cause and sequence of events, the detail and "
                  "movement of objects, and the action and pose of persons. Based on your observations, select the "
                  "best option that accurately addresses the question.")
LVB_PROMPT = (f"{VAMBA}\nRespond with only the letter (A, B, C, or D) of the correct option.\n"
              "What colour is the goalkeeper's shirt?\n(A) red\n(B) green\n(C) black\n(D) white")
SYN_PROMPT = (f"{VAMBA}\nRespond with only the letter (A, B, C, or D) of the correct option.\n"
              "What color was the triangle that appeared in the video?\n(A) red\n(B) green\n(C) blue\n(D) cyan")
HOUR_PROMPT = (f"{VAMBA}\nWhat will I most likely do next?\nA. wash a mug\nB. dry a pan\nC. cut bread\nD. open fridge\n"
               "E. sweep floor\nRespond with only the letter (A, B, C, D, or E) of the correct option.")

# benchmark -> scoring -> (system prompt, user prompt, response prefix)
SNAPSHOTS: dict[str, dict[str, tuple[str | None, str, str]]] = {
    "lvbench": {"official": (None, LVB_PROMPT, ""), "release": (None, LVB_PROMPT, "")},
    "synthetic": {"official": (None, SYN_PROMPT, ""), "release": (None, SYN_PROMPT, "")},
    "hourvideo": {"official": (None, HOUR_PROMPT, ""), "release": (None, HOUR_PROMPT, "")},
    "videomme": {
        "official": (None, "Select the best answer to the following multiple-choice question based on the video. "
                           "Respond with only the letter (A, B, C, or D) of the correct option.\n"
                           "How many planets are shown?\nA. 3.\nB. 5.\nC. 8.\nD. 9.\nThe best answer is:", ""),
        "release": (None, "Select the best answer to the following multiple-choice question based on the video. "
                          "Respond with only the letter (A, B, C, or D) of the correct option.\n"
                          "How many planets are shown?\nA. 3. B. 5. C. 8. D. 9.", ""),
    },
    "mlvu": {
        "official": (MLVU_SYSTEM, "Question: What is the main setting of the video?\nOptions:\n(A) Desert\n(B) Forest\n"
                                  "(C) Ocean\n(D) City\nOnly give the best option.", "Best Option: ("),
        "release": (None, f"{VAMBA}\nWhat is the main setting of the video?\nA. Desert\nB. Forest\nC. Ocean\nD. City\n"
                          "Respond with only the letter (A, B, C, or D) of the correct option.", ""),
    },
    "longvideobench": {
        "official": (None, "Question: What does the man hold?\nA. a cup\nB. a pen\nC. a phone\nD. a book\nE. a key\n"
                           "Answer with the option's letter from the given choices directly.", ""),
        "release": (None, f"{VAMBA}\nWhat does the man hold?\nA. a cup\nB. a pen\nC. a phone\nD. a book\nE. a key\n"
                          "Respond with only the letter (A, B, C, D, or E) of the correct option.", ""),
    },
    "mvbench": {
        "official": (MVBENCH_SYSTEM, "Question: What happened after the person took the box?\nOptions:\n"
                                     "(A) Opened the door.\n(B) Sat on the bed.\n(C) Put down the box.\n"
                                     "Only give the best option.", "Best option:("),
        "release": (None, f"{VAMBA}\nWhat happened after the person took the box?\nA. Opened the door.\n"
                          "B. Sat on the bed.\nC. Put down the box.\n"
                          "Respond with only the letter (A, B, or C) of the correct option.", ""),
    },
    "nextqa": {
        "official": (None, "why did the dog run to the door\nA. to sleep\nB. to eat\nC. to play\nD. to greet the man\n"
                           "E. to hide\nAnswer with the option's letter from the given choices directly.", ""),
        "release": (None, f"{VAMBA}\nwhy did the dog run to the door\nA. to sleep\nB. to eat\nC. to play\n"
                          "D. to greet the man\nE. to hide\n"
                          "Respond with only the letter (A, B, C, D, or E) of the correct option.", ""),
    },
}


def test_snapshots_cover_every_benchmark() -> None:
    assert sorted(SNAPSHOTS) == list_benchmarks() == sorted(SAMPLES)


@pytest.mark.parametrize("name", sorted(SNAPSHOTS))
@pytest.mark.parametrize("scoring", ["official", "release"])
def test_prompt_snapshot(name: str, scoring: str) -> None:
    bench = get_benchmark(name)
    system, user, prefix = SNAPSHOTS[name][scoring]
    assert bench.system_prompt(scoring) == system
    assert bench.prompt(_q(name), scoring) == user
    assert bench.response_prefix(scoring) == prefix


def test_videomme_subtitle_preamble() -> None:
    bench = get_benchmark("videomme")
    with_subs = bench.prompt(_q("videomme"), "official", subtitles="[00:01] hello\n[00:05] planets")
    assert with_subs == ("This video's subtitles are listed below:\n[00:01] hello\n[00:05] planets\n"
                         + SNAPSHOTS["videomme"]["official"][1])


def test_unknown_scoring() -> None:
    with pytest.raises(ValueError, match="official, release"):
        get_benchmark("lvbench").prompt(_q("lvbench"), "strict")


def test_benchmark_extract_uses_its_rule() -> None:
    mlvu, mvbench = get_benchmark("mlvu"), get_benchmark("mvbench")
    assert mlvu.extract("B) Forest", _q("mlvu"), "official") == "B"
    assert mlvu.extract("Best Option: (B) Forest", _q("mlvu"), "official") == "B"  # prefix echoed back
    assert mlvu.extract("B. Forest", _q("mlvu"), "official") is None
    assert mlvu.extract("B. Forest", _q("mlvu"), "release") == "B"
    assert mvbench.extract("C) Put down the box.", _q("mvbench"), "official") == "C"
    assert mvbench.extract("D)", _q("mvbench"), "official") is None  # 3 options only
    # option-text fallback only where the official protocol allows it, never in release scoring
    nextqa, videomme = get_benchmark("nextqa"), get_benchmark("videomme")
    assert nextqa.extract("to greet the man", _q("nextqa"), "official") == "D"
    assert nextqa.extract("to greet the man", _q("nextqa"), "release") is None
    assert get_benchmark("synthetic").extract("It was green.", _q("synthetic"), "official") == "B"
    assert videomme.extract("Eight.", _q("videomme"), "official") is None
    assert get_benchmark("hourvideo").extract("B", _q("hourvideo"), "official") == "B"
    assert get_benchmark("hourvideo").generation_kwargs("release") == {"do_sample": True, "temperature": 1.0}
    assert get_benchmark("lvbench").generation_kwargs("release") == {"do_sample": False}
