"""Aggregation shared by every benchmark: per-question verdicts -> overall, per-category and headline accuracy.

Why shared: benchmarks differ only in a few choices (how an unparsed reply counts, pooled vs macro headline), and
those choices move results by points, so they are made here once, by name, and each benchmark only names its own.

Per-record verdict (a record has `qid`, `letter` (the letters the reply counts as, or None), `answer` (gold letter
| None), `categories`, `error` (str | None)):

- `error` set (no reply: a record that did not load, a missing video, a decoding or generation failure): *wrong*
  under every policy, counted in `errors`, so failures always lower the score visibly instead of vanishing;
- `answer` None: *unscored* (hidden gold, e.g. a test split); counted in `unscored`, in no denominator;
- `letter` None: *unparsed*, counted in `unparsed`, then per policy: ``wrong``; ``exclude`` (left out of every
  denominator, Video-MME's official rule); ``random`` (a random option of the question: LongVideoBench's scorer and
  lmms-eval's NExT-QA parser call Python's `random.choice` once per failed reply, in dataset order, from one seeded
  stream; here one `random.Random(seed)` stream is drawn from for the unparsed records in the order given, which
  callers keep in annotation order);
- otherwise correct iff the gold letter is among the reply's letters (one letter for every rule except MVBench's
  official check, which can accept several; `vamba.evals.answer`).

Categories are multi-label: a question counts once in every category of every group it lists. Accuracies are
percentages; an empty block reads 0.0 with total 0. Records are keyed by `qid`: a later record for the same
question replaces an earlier one (a resumed run that retried a failed question appends a new line).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

UNPARSED_POLICIES = ("wrong", "exclude", "random")


@dataclass
class Tally:
    """Correct / total counts of one split."""

    correct: int = 0
    total: int = 0

    def add(self, ok: bool) -> None:
        self.correct += int(ok)
        self.total += 1

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / self.total if self.total else 0.0

    def block(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "correct": self.correct, "total": self.total}


def _num_options(record: dict[str, Any], letters: str) -> int:
    if record.get("options"):
        return len(record["options"])
    if record.get("num_options"):
        return int(record["num_options"])
    return len(letters)


def verdict(record: dict[str, Any], unparsed: str = "wrong", rng: random.Random | None = None,
            letters: str = "ABCD") -> bool | None:
    """True / False for a counted record, None for one left out of the denominators (unscored or excluded).
    `rng` is the stream the ``random`` policy draws from (one draw per unparsed record)."""
    if record.get("error"):
        return False
    if record.get("answer") is None:
        return None
    letter = record.get("letter")
    if letter is None:
        if unparsed == "exclude":
            return None
        if unparsed == "random":
            letter = (rng or random.Random(0)).choice(letters[: _num_options(record, letters)])
        else:
            return False
    return record["answer"] in letter


def latest_by_qid(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per question, the last one written winning, in first-seen order."""
    by_qid: dict[str, dict[str, Any]] = {}
    for r in records:
        by_qid[str(r["qid"])] = r
    return list(by_qid.values())


def macro_mean(blocks: dict[str, dict[str, Any]]) -> float:
    """Unweighted mean accuracy over the categories that have at least one counted question."""
    accs = [b["accuracy"] for b in blocks.values() if b["total"]]
    return sum(accs) / len(accs) if accs else 0.0


def summarize(records: list[dict[str, Any]], *, benchmark: str, scoring: str, rule: str, unparsed: str = "wrong",
              headline: str = "pooled", rng: random.Random | None = None, letters: str = "ABCD") -> dict[str, Any]:
    """The aggregate dict every benchmark returns (see `vamba.evals.benchmark.Benchmark.aggregate`).

    `headline` is 'pooled' (overall accuracy) or a group name whose categories are macro-averaged.
    """
    if unparsed not in UNPARSED_POLICIES:
        raise ValueError(f"unknown unparsed policy {unparsed!r}; expected one of {UNPARSED_POLICIES}")
    overall = Tally()
    groups: dict[str, dict[str, Tally]] = {}
    n_unparsed = n_errors = n_unscored = 0
    rng = rng or random.Random(0)
    for r in latest_by_qid(records):
        if r.get("error"):
            n_errors += 1
        elif r.get("answer") is None:
            n_unscored += 1
            continue
        elif r.get("letter") is None:
            n_unparsed += 1
        ok = verdict(r, unparsed, rng, letters)
        # A category is listed even when all of its questions are excluded, so the report shows it (total 0).
        for group, cats in (r.get("categories") or {}).items():
            for cat in cats:
                tally = groups.setdefault(group, {}).setdefault(str(cat), Tally())
                if ok is not None:
                    tally.add(ok)
        if ok is not None:
            overall.add(ok)
    group_blocks = {g: {c: cats[c].block() for c in sorted(cats)} for g, cats in sorted(groups.items())}
    if headline == "pooled":
        value = overall.accuracy
    else:
        value = macro_mean(group_blocks.get(headline, {}))
    return {
        "benchmark": benchmark,
        "scoring": scoring,
        "protocol": scoring,
        "rule": rule,
        "headline": value,
        "overall": overall.block(),
        "groups": group_blocks,
        "unparsed": n_unparsed,
        "errors": n_errors,
        "unscored": n_unscored,
    }
