"""THE answer extractor: a model's free-text reply -> the option letter(s) it gives, by a named rule.

Why one module: benchmark numbers differ by whole points depending on how a reply like "I think B" or
"The answer is (B)." is read, so every benchmark, the runner and the tests use the same table of rules, and a
benchmark's protocol chooses a rule by name. The rules reproduce the outside code that defines them
(docs/protocols.md names each source); each returns the letters of `letters` the reply counts as
(one letter, except `mvbench`), or None (unparsed: the protocol then counts it wrong, leaves it out, or draws a
random option). A verdict is "the gold letter is among the returned letters" (`scoring.verdict`).

Rules (`RULES`):

- ``release``: the Vamba release's rule (all its scripts). Lower-case; keep the text after the last "the answer is",
  else after the last "answer:", else the last piece of a split on "the option is "; strip; its first alphabetic
  character is the answer (upper-cased here). "I think B" reads "i": wrong, faithfully.
- ``videomme``: Video-MME's `extract_characters_regex`. Strip; delete, case-sensitively, each listed prefix (two
  list entries fused by a missing comma are kept fused, so they never match, as there); more than 10 words and no
  capital A-D -> None; else the first capital A-D anywhere, even inside a word ("Based on ..." reads B).
- ``longvideobench``: the LongVideoBench authors' scorer (in lmms-eval): its own prefix list, then the first capital
  A-E anywhere; None where the scorer draws a random option (more than 10 words without A-E, or no A-E at all).
- ``mlvu``: MLVU's `check_ans`: with a ")" in the reply, the one character before the first ")", else the whole
  unstripped reply; it must be exactly a letter (" B", "B.", "b)" are wrong).
- ``mvbench``: MVBench's `check_ans` on "(" + the first line of the stripped reply: its first space-separated token,
  lower-cased, is right for letter x iff the token without dots is a substring of "(x)" or "(x)" is a substring of
  the token. Every letter satisfying it is returned, so an empty reply ("(") is right for every question, as there.
- ``lvbench``: LVBench's optional `polish_answer`: strip; cut at the first ")"; strip; the text after the first "("
  if one remains; the first character of its first space-separated token; exact (case-sensitive) match.
- ``first_char``: HourVideo's baselines read the first character of the answer: the first non-blank character.
- ``mmmu``: lmms-eval's NExT-QA parser (MMMU's `parse_multi_choice_response`): "(X)", else "X ", else "X."; a reply of
  more than 5 words may name an option's text; several candidates -> the last one; none -> None (there: random).
- ``priority``: the project's own format-priority rule, used by the synthetic benchmark only. It is modelled on
  lmms-eval's `extract_mcq_answer` but is not it: letters must stand alone (never a capital inside a word), and a
  lower-case letter counts when it is the whole reply or closes an answer phrase ("answer: d").

`match_option_text` is a separate fallback for replies that name an option's text; only the synthetic benchmark uses
it (no outside protocol does).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

#: Option letters in order; a benchmark uses a prefix of it.
LETTERS = "ABCDEFGHIJ"

#: Video-MME's prefix list, verbatim: "The best option is" "The correct option is" and "Best answer:" "Best option:"
#: are each one string there (a missing comma), so they are one string here too.
VIDEOMME_PREFIXES: tuple[str, ...] = (
    "The best answer is", "The correct answer is", "The answer is", "The answer",
    "The best option isThe correct option is", "Best answer:Best option:", "Answer:", "Option:",
    "The correct answer", "The correct option",
)
#: The LongVideoBench scorer's prefix list.
LONGVIDEOBENCH_PREFIXES: tuple[str, ...] = (
    "The best answer is", "The correct answer is", "The answer is", "The answer", "The best option is",
    "The correct option is", "Best answer:", "Best option:",
)
# priority: phrases announcing the answer (case-insensitive).
_ANSWER_PHRASE = (r"(?<![A-Za-z])(?:(?:the\s+)?(?:correct\s+|best\s+|final\s+|right\s+)?(?:answer|option|choice)"
                  r"(?:\s+is|\s*:)?(?:\s+option)?|best\s+option\s*:)")

Rule = Callable[[str, str, Sequence[str]], "str | None"]


def _cls(letters: str) -> str:
    return "[" + re.escape(letters) + "]"


def _release(text: str, letters: str, options: Sequence[str]) -> str | None:
    t = text.lower()
    if "the answer is" in t:
        t = t.rsplit("the answer is", 1)[1]
    elif "answer:" in t:
        t = t.rsplit("answer:", 1)[1]
    elif "the option is" in t:
        t = t.split("the option is ")[-1]
    c = next((c for c in t.strip() if c.isalpha()), "")
    return c.upper() if c and c.upper() in letters else None


def _first_capital(text: str, prefixes: tuple[str, ...], pool: str) -> str | None:
    """Video-MME's and LongVideoBench's shared shape: delete prefixes, then the first capital of `pool` anywhere."""
    s = text.strip()
    for prefix in prefixes:
        s = s.replace(prefix, "")
    found = re.search(_cls(pool), s)  # the > 10 words test only matters when no capital is found: None either way
    return found.group(0) if found else None


def _videomme(text: str, letters: str, options: Sequence[str]) -> str | None:
    letter = _first_capital(text, VIDEOMME_PREFIXES, "ABCD")
    return letter if letter and letter in letters else None


def _longvideobench(text: str, letters: str, options: Sequence[str]) -> str | None:
    # A capital outside the question's options (E on a 4-option question) is a wrong answer there, not a random
    # draw: return it, the verdict then fails it.
    return _first_capital(text, LONGVIDEOBENCH_PREFIXES, "ABCDE")


def _mlvu(text: str, letters: str, options: Sequence[str]) -> str | None:
    cut = text.find(")")
    pred = text[cut - 1:cut] if cut > 0 else ("" if cut == 0 else text)
    return pred if len(pred) == 1 and pred in letters else None


def _mvbench(text: str, letters: str, options: Sequence[str]) -> str | None:
    lines = text.strip().split("\n")
    token = ("(" + lines[0]).lower().split(" ")[0]
    right = [x for x in letters if token.replace(".", "") in f"({x.lower()})" or f"({x.lower()})" in token]
    return "".join(right) or None


def _lvbench(text: str, letters: str, options: Sequence[str]) -> str | None:
    s = text.strip().split(")")[0].strip()
    if "(" in s:
        s = s.split("(", 1)[1]
    token = s.split(" ")[0]
    return token[0] if token and token[0] in letters else None


def _first_char(text: str, letters: str, options: Sequence[str]) -> str | None:
    s = text.strip()
    return s[0] if s and s[0] in letters else None


def _mmmu(text: str, letters: str, options: Sequence[str]) -> str | None:
    response = text
    for char in (",", ".", "!", "?", ";", ":", "'"):
        response = response.strip(char)
    response = f" {response} "
    choices = list(letters)
    bracket = [c for c in choices if f"({c})" in response]
    candidates = bracket or [c for c in choices if f"{c} " in response] or [c for c in choices if f"{c}." in response]
    by_text = False
    if not candidates and len(response.split()) > 5:
        candidates = [c for c, o in zip(choices, options) if o.strip().lower() in response.lower()]
        by_text = True
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    if by_text:
        where = [response.lower().rfind(options[choices.index(c)].strip().lower()) for c in candidates]
    else:
        where = [response.rfind(f"({c})" if bracket else f" {c} ") for c in candidates]
    return candidates[where.index(max(where))]  # np.argmax: the first maximum


def _priority(text: str, letters: str, options: Sequence[str]) -> str | None:
    s = text.strip()
    only = re.fullmatch(r"[\s(\[]*([A-Za-z])[\s)\].:]*", s)
    if only and only.group(1).upper() in letters:
        return only.group(1).upper()
    c, lo = _cls(letters), _cls(letters.lower())
    formats = (
        rf"^[\s(\[*]*({c})(?![A-Za-z0-9])",                    # standalone at the start
        rf"(?<![A-Za-z0-9])({c})[\s)\].:!*]*$",                 # standalone at the end
        rf"(?i:{_ANSWER_PHRASE})\s*[(\[]?\s*(?:({c})(?![A-Za-z0-9])|({lo})(?=\s*[.)\]!]*\s*$))",
        rf"\(({c})\)",                                          # (X)
        rf"(?<![A-Za-z0-9])({c})\.",                            # X.
        rf"(?<![A-Za-z0-9])({c}):",                             # X:
        rf"(?<![A-Za-z0-9])({c})\)",                            # X)
        rf"(?<![A-Za-z0-9])({c})\s",                            # X + space
        rf"(?<![A-Za-z0-9])({c})(?![A-Za-z0-9])",               # any standalone occurrence
    )
    for pattern in formats:
        matches = list(re.finditer(pattern, s))
        if matches:
            return next(g for g in matches[-1].groups() if g).upper()
    return None


RULES: dict[str, Rule] = {
    "release": _release,
    "videomme": _videomme,
    "longvideobench": _longvideobench,
    "mlvu": _mlvu,
    "mvbench": _mvbench,
    "lvbench": _lvbench,
    "first_char": _first_char,
    "mmmu": _mmmu,
    "priority": _priority,
}


def extract_letter(text: str | None, letters: str = "ABCD", rule: str = "release",
                   options: Sequence[str] = ()) -> str | None:
    """The option letter(s) a reply gives under `rule` (see the module docstring), or None if it gives none.
    `options` (the option texts) is used by the rules that read option text (``mmmu``)."""
    try:
        fn = RULES[rule]
    except KeyError:
        raise ValueError(f"unknown answer rule {rule!r}; known rules: {', '.join(RULES)}") from None
    return fn(text or "", letters, options)


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .!\"'`")


def match_option_text(text: str | None, options: list[str], letters: str = LETTERS) -> str | None:
    """The letter of the one option whose text the reply equals or contains (case/whitespace-insensitive).

    Equality wins; otherwise the options contained (as whole words) in the reply are considered, dropping any
    contained in a longer contained option ("red" inside "dark red"); exactly one must remain, else None.
    """
    if not text:
        return None
    reply = _norm(text)
    if not reply:
        return None
    normed = [_norm(o) for o in options]
    equal = [i for i, o in enumerate(normed) if o and o == reply]
    if len(equal) == 1:
        return letters[equal[0]]
    if equal:
        return None
    inside = [i for i, o in enumerate(normed) if o and re.search(rf"(?<!\w){re.escape(o)}(?!\w)", reply)]
    inside = [i for i in inside if not any(j != i and normed[i] != normed[j] and normed[i] in normed[j]
                                           for j in inside)]
    return letters[inside[0]] if len(inside) == 1 else None
