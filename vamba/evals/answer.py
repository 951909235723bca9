"""THE answer extractor: a model's free-text reply -> an option letter, by a named rule (FORMATS.md).

Why one module: benchmark numbers differ by whole points depending on how a reply like "I think B" or
"The answer is (B)." is read, so every benchmark, the runner and the tests use the same table of rules, and a
benchmark chooses a rule by name. Each rule returns a letter of `letters` or None (unparsed); none of them guesses.

Rules (`RULES`):

- ``release``: the Vamba release's shared rule. Lower-case; keep the text after the last "the answer is", else after
  the last "answer:", else after the last "the option is " (FORMATS.md says "last" for the first phrase; we read it
  the same way for the other two); take the first alphabetic character and upper-case it; it is an answer only if
  it is in `letters`. So "I think B" reads "I" -> None, faithfully (the release scores it wrong).
- ``lmms``: lmms-eval's format-priority extractor (our own implementation of the documented behaviour). Formats, in
  priority order: a standalone letter at the start; at the end; after an answer phrase ("the answer is", "answer:",
  "best option:", ...); "(X)"; "X."; "X:"; "X)"; "X "; any standalone occurrence. Within one format the *last*
  occurrence wins. Letters are upper-case, except that a reply that is only a letter, or a letter closing an
  answer phrase ("answer: d"), may be lower-case; "any occurrence" means a standalone letter, never a capital
  inside a word.
- ``videomme``: Video-MME's official rule. Strip; delete every occurrence of its listed answer prefixes; if the
  rest has more than 10 words and no candidate letter -> None; else the first candidate letter. Interpretation:
  the official code accepts the first capital A-D *anywhere*, so "Berries" reads B and "ABSOLUTELY" reads A; we
  accept only a capital that stands alone (not adjacent to another letter), e.g. "B", "B.", "(B)", "B: x" - the
  same result whenever the reply starts with its letter, and no spurious letters from capitalised words.
- ``mlvu``: MLVU's official rule. The character just before the first ")" (the reply is primed with
  "Best Option: ("), else the whole (stripped) reply; an answer only if that is exactly a letter of `letters`.
- ``mvbench``: MVBench's official rule (reply primed with "Best option:("). The first whitespace token, without
  dots and surrounding brackets, must be a single letter (either case). The official substring test also counts an
  empty reply as correct for every option; here an empty reply is unparsed.
- ``lvbench``: LVBench's optional official cleaner. Strip, cut at the first ")", keep the text after the last "("
  before it, take the first token's first character; exact (case-sensitive) match, as LVBench scores exactly.
- ``first_char``: HourVideo's official baselines (the answer letter is the first character of the reply's answer):
  the first non-blank character, case-sensitive.

`match_option_text` is the separate fallback for replies that name an option's text instead of its letter; a
benchmark opts into it for its official scoring (`Benchmark.official_text_fallback`). The release rule never uses it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

#: Option letters in order; a benchmark uses a prefix of it.
LETTERS = "ABCDEFGHIJ"

# Video-MME's answer prefixes, longest first where one contains another. Two prefixes that the official list fuses
# into one string (a missing comma) are left out: they never match there either.
VIDEOMME_PREFIXES: tuple[str, ...] = (
    "The best answer is", "The correct answer is", "The answer is", "The answer", "Answer:", "Option:",
    "The correct answer", "The correct option",
)
# lmms: phrases announcing the answer (case-insensitive).
_ANSWER_PHRASE = (r"(?<![A-Za-z])(?:(?:the\s+)?(?:correct\s+|best\s+|final\s+|right\s+)?(?:answer|option|choice)"
                  r"(?:\s+is|\s*:)?(?:\s+option)?|best\s+option\s*:)")


def _cls(letters: str) -> str:
    return "[" + re.escape(letters) + "]"


def _standalone(letters: str) -> str:
    """A letter of `letters` not adjacent to another letter or digit (so never a capital inside a word)."""
    return rf"(?<![A-Za-z0-9])({_cls(letters)})(?![A-Za-z0-9])"


def _release(text: str, letters: str) -> str | None:
    t = text.lower()
    for marker in ("the answer is", "answer:", "the option is "):
        if marker in t:
            t = t.rsplit(marker, 1)[1]
            break
    for c in t:
        if c.isalpha():
            return c.upper() if c.upper() in letters else None
    return None


def _lmms(text: str, letters: str) -> str | None:
    s = text.strip()
    if not s:
        return None
    only = re.fullmatch(r"[\s(\[]*([A-Za-z])[\s)\].:]*", s)
    if only and only.group(1).upper() in letters:
        return only.group(1).upper()
    c, lo = _cls(letters), _cls(letters.lower())
    alone = _standalone(letters)
    formats = (
        rf"^[\s(\[*]*({c})(?![A-Za-z0-9])",                    # standalone at the start
        rf"(?<![A-Za-z0-9])({c})[\s)\].:!*]*$",                 # standalone at the end
        rf"(?i:{_ANSWER_PHRASE})\s*[(\[]?\s*(?:({c})(?![A-Za-z0-9])|({lo})(?=\s*[.)\]!]*\s*$))",
        rf"\(({c})\)",                                          # (X)
        rf"(?<![A-Za-z0-9])({c})\.",                            # X.
        rf"(?<![A-Za-z0-9])({c}):",                             # X:
        rf"(?<![A-Za-z0-9])({c})\)",                            # X)
        rf"(?<![A-Za-z0-9])({c})\s",                            # X + space
        alone,                                                  # any standalone occurrence
    )
    for pattern in formats:
        matches = list(re.finditer(pattern, s))
        if matches:
            last = matches[-1]
            letter = next(g for g in last.groups() if g)
            return letter.upper()
    return None


def _videomme(text: str, letters: str) -> str | None:
    s = text.strip()
    for prefix in VIDEOMME_PREFIXES:
        s = s.replace(prefix, "")
    found = re.search(_standalone(letters), s)
    if len(s.split()) > 10 and not found:
        return None
    return found.group(1) if found else None


def _mlvu(text: str, letters: str) -> str | None:
    s = text.strip()
    cut = s.find(")")
    pred = (s[cut - 1] if cut > 0 else "") if cut >= 0 else s
    return pred if len(pred) == 1 and pred in letters else None


def _mvbench(text: str, letters: str) -> str | None:
    tokens = text.split()
    if not tokens:
        return None
    tok = tokens[0].replace(".", "").strip("()[]")
    return tok.upper() if len(tok) == 1 and tok.upper() in letters else None


def _lvbench(text: str, letters: str) -> str | None:
    s = text.strip().split(")", 1)[0]
    s = s.rsplit("(", 1)[-1]
    tokens = s.split()
    if not tokens:
        return None
    c = tokens[0][0]
    return c if c in letters else None


def _first_char(text: str, letters: str) -> str | None:
    s = text.strip()
    return s[0] if s and s[0] in letters else None


RULES: dict[str, Callable[[str, str], str | None]] = {
    "release": _release,
    "lmms": _lmms,
    "videomme": _videomme,
    "mlvu": _mlvu,
    "mvbench": _mvbench,
    "lvbench": _lvbench,
    "first_char": _first_char,
}


def extract_letter(text: str | None, letters: str = "ABCD", rule: str = "lmms") -> str | None:
    """The option letter a reply gives under `rule` (see the module docstring), or None if it gives none."""
    try:
        fn = RULES[rule]
    except KeyError:
        raise ValueError(f"unknown answer rule {rule!r}; known rules: {', '.join(RULES)}") from None
    if not text:
        return None
    return fn(text, letters)


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
