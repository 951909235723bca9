"""Score one set of replies under both protocols: how much the protocol alone moves Video-MME and MLVU numbers.

    python scripts/protocol_compare.py --videomme <Video-MME>/videomme/test-00000-of-00001.parquet [--seed 0]

The questions are the real Video-MME annotations (2,700 questions; the parquet, or a JSON list of its records). The
replies are simulated: for each question a "model" picks the gold option with a per-task probability, else a random
other one, and writes that choice in a reply style drawn from a mix of the shapes video LMMs produce (a bare letter,
"B.", "B. text", "The answer is B.", option text only, lower case, empty, ...). MLVU-style: 2,175 MLVU-format
questions (the MLVU dev task sizes) built from the same questions, with MLVU's data quirks (two answers matching no
candidate, six duplicated candidates), and the continuations a model writes after MLVU's "Best Option: (" priming.
Each reply set is then extracted, gold-matched and aggregated by each protocol exactly as `vamba eval` does.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

from vamba.evals.benchmark import Question, gold_from_text
from vamba.evals.benchmarks import get_benchmark

#: Reply styles after a "Respond with only the letter" prompt: (weight, template); {X} letter, {T} option text.
LETTER_STYLES = [(45, "{X}"), (10, "{X}."), (10, "{X}. {T}"), (5, "({X}) {T}"), (8, "The answer is {X}."),
                 (5, "Answer: {X}"), (4, "The best answer is {X}."), (3, "Based on the video, the answer is {X}."),
                 (4, "{T}"), (3, "{x}"), (1, ""), (2, "I think the answer is {X} because of what happens.")]
#: Continuations after MLVU's "Best Option: (" priming.
PRIMED_STYLES = [(60, "{X}) {T}"), (15, "{X})"), (10, "{X}"), (5, "{X}. {T}"), (3, " {X}) {T}"), (4, "{T}"),
                 (1, ""), (2, "{x}) {T}")]
MLVU_TASKS = {"plotQA": (539, 0.70), "findNeedle": (355, 0.75), "ego": (352, 0.55), "count": (206, 0.35),
              "order": (259, 0.45), "anomaly_reco": (200, 0.65), "topic_reasoning": (264, 0.85)}


def _reply(rng: random.Random, q: Question, gold: int, p_right: float, styles) -> str:
    k = gold if rng.random() < p_right else rng.choice([i for i in range(len(q.options)) if i != gold])
    template = rng.choices([t for _, t in styles], weights=[w for w, _ in styles])[0]
    letter = "ABCDE"[k]
    return template.format(X=letter, x=letter.lower(), T=q.options[k])


def _score(bench, qs: list[Question], replies: list[str], protocol: str, seed: int) -> dict:
    records = []
    for q, reply in zip(qs, replies):
        records.append({"qid": q.qid, "letter": bench.extract(reply, q, protocol), "answer": bench.gold(q, protocol),
                        "categories": bench.categories_for(q, protocol), "error": None, "num_options": len(q.options)})
    return bench.aggregate(records, protocol, seed=seed)


def _mlvu_questions(pool: list[Question], rng: random.Random) -> list[Question]:
    """MLVU-format questions (answer = option TEXT) with MLVU's quirks, from the Video-MME question pool."""
    picked = rng.sample(pool, sum(n for n, _ in MLVU_TASKS.values()))
    out, i = [], 0
    for task, (n, _) in MLVU_TASKS.items():
        for j in range(n):
            src = picked[i]
            i += 1
            options, answer = list(src.options), src.options["ABCD".index(src.answer)]
            if task == "findNeedle" and j < 2:
                answer = answer + " (not among the candidates)"
            elif task == "plotQA" and j < 6:  # a duplicated candidate: official gold = last, release = first
                other = next(k for k in range(4) if options[k] != answer)
                options[other] = answer
            # the gold letter as the MLVU loader derives it (the official protocol's; the release's via `gold`)
            out.append(Question(f"{task}_{j}", "", src.question, options, gold_from_text(answer, options, last=True),
                                {"question_type": [task]}, extra={"answer_text": answer}))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videomme", type=Path, required=True,
                        help="Video-MME's annotations: its parquet, or a .json list of the parquet's records")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    videomme = get_benchmark("videomme")
    with tempfile.TemporaryDirectory() as tmp:
        qs = videomme.load(Path(tmp), args.videomme)
    p_right = {"short": 0.70, "medium": 0.58, "long": 0.50}
    replies = [_reply(rng, q, "ABCD".index(q.answer), p_right[q.categories["duration"][0]], LETTER_STYLES)
               for q in qs]
    mlvu = get_benchmark("mlvu")
    mq = _mlvu_questions(qs, rng)
    probs = {t: p for t, (_, p) in MLVU_TASKS.items()}
    primed = []
    for q in mq:
        gold = "ABCD".index(q.answer) if q.answer in "ABCD" else 0  # '@' (no match): the model picks A or another
        primed.append(_reply(rng, q, gold, probs[q.categories["question_type"][0]], PRIMED_STYLES))
    print("| benchmark (replies) | protocol | headline | pooled | correct / counted | unparsed |")
    print("|---|---|---:|---:|---:|---:|")
    for name, bench, questions, reps in (("Video-MME (letter-style)", videomme, qs, replies),
                                         ("MLVU (primed 'Best Option: (')", mlvu, mq, primed)):
        for protocol in ("official", "release"):
            out = _score(bench, questions, reps, protocol, args.seed)
            o = out["overall"]
            print(f"| {name} | {protocol} | {out['headline']:.2f} | {o['accuracy']:.2f} | "
                  f"{o['correct']} / {o['total']} | {out['unparsed']} |")


if __name__ == "__main__":
    main()
