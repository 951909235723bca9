"""AutoDQ, DREAM-1K's caption metric, exactly as the official scorer (`bytedance/tarsier` @ 63de87a,
`evaluation/metrics/evaluate_dream_gpt.py`; its rules line by line in `docs/captioning.md` §3).

Per video, both descriptions lowercased: the judge extracts the caption's events (the reference's are the file's);
recall = share of reference events the caption entails, precision = share of caption events the reference entails,
only "entailment" counting; an empty list is sent as the other description and scores 1.0. A reply that fails the
official clean-up and checks (in its order; counts matched by position only) is asked again, 10 tries in all; a
video still failing is excluded and counted. F1 per source from its mean R and P; OVERALL from the mean of the
sources' R and P; bucket tables by subjects / shots / events. The prompts are the official bytes, typos included.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections import Counter, defaultdict
from typing import Any

from .judge import Judge, JudgeError

#: The official judge: Azure deployment `gpt-35-turbo-0125` (OpenAI name below); no sampling parameter is sent.
JUDGE = {"model": "gpt-3.5-turbo-0125", "sampling": {}}
MAX_RETRY = 10
LABELS = ("entailment", "neutral", "contradiction")

EXTRACT_TEMPLATE = (
    "Bellow is a description of a video clip:\n"
    "Video Description: {caption}\n\n"
    "Extract at most 10 key events from the above video description paragraph. Requirements\n:"
    "- An event must include an action, motion or movement (NOT STATIC INFORMATION). DON'T repeat same events.\n"
    "- Every event is represented by a brief sentence within 10 words, with a subject, a predicate and optionally an "
    "object, avoid unnecessary appearance descriptions.\n"
    "- Every event must be atomic, meaning that it cannot be further split into multiple events.\n"
    "- Scene cuts and camera motions are NOT events.\n"
    "- Substitute pronouns by the nouns they refer to.\n\n"
    "Please generate the response in the form of a Python dictionary string with keys \"events\". The value of "
    "\"events\" is a List(str), of which each item is an event. "
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
    "For example, your response should look like this: {\"events\": [event1, event2, ...]}"
)
ENTAIL_TEMPLATE = (
    "Given a video description and a list of events. For each event, classify the relationship between the video "
    "description and the event into three classes: entailment, neutral, contradiction.\n"
    "- \"entailment\" means that the video description entails the event.\n"
    "- \"contradiction\" means that some detail in the video description contradicts with the event.\n"
    "- \"neutral\" means that the relationship is neither \"entailment\" or \"contradiction\".\n\n"
    "Video Description:\n{prediction}\n\n"
    "Events: {events}\n"
    "Output a JSON formed as:\n"
    "{\n"
    "  \"events\": [\n"
    "    {\"event\": \"copy an event here\", \"relationship\": \"put class name here\",  "
    "\"reason\": \"give your reason here\"},\n"
    "    ...\n"
    "  ]\n"
    "}\n\n"
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only output the JSON. Output:"
)
_FOUR = {"<=1": lambda n: n <= 1, "==2": lambda n: n == 2, "==3": lambda n: n == 3, ">=4": lambda n: n >= 4}
BUCKETS = {"subjects": _FOUR, "shots": _FOUR, "events": {  # the official keys (`eval(f"{n}{key}")` there)
    "<=3": lambda n: n <= 3, "in [4, 5]": lambda n: n in [4, 5], "in [6, 7]": lambda n: n in [6, 7],
    ">=8": lambda n: n >= 8}}


class Failed(Exception):
    """A video whose judge calls found no valid reply within the re-asks."""


def fill(template: str, **values: str) -> str:
    """The template with `{caption}` / `{prediction}` / `{events}` filled in one pass (inserted text is left as is)."""
    return re.sub(r"\{(caption|prediction|events)\}", lambda m: values[m.group(1)], template)


def _strip_fence(text: str) -> str:
    for fence in ("```json", "```python"):
        if text.startswith(fence):
            return text.replace(fence, "").replace("```", "").strip()
    return text


def parse_events(reply: str) -> list[str]:
    """An extraction reply's events: fence removed (checked before any strip), `ast.literal_eval`, `['events']`,
    a list whose first item (if any) is a string. ValueError otherwise."""
    try:
        events = ast.literal_eval(_strip_fence(reply))["events"]
    except Exception as e:  # literal_eval raises many types; the official code catches them all
        raise ValueError(f"unparsable event list ({type(e).__name__})") from None
    if not (isinstance(events, list) and (len(events) == 0 or isinstance(events[0], str))):
        raise ValueError("'events' is not a list of strings")
    return events


def clean_entailment(reply: str) -> str:
    """The official clean-up of an entailment reply, in its order (docs/captioning.md §3.5, 1-8)."""
    s = re.sub(r"\s+", " ", re.sub(r"\n+", "\n", reply.strip()))
    s = _strip_fence(s)
    s = ("" if s.startswith("{") else "{") + s + ("" if s.endswith("}") else "}")
    s = s.replace("True", "true").replace("False", "false").replace("} {", "}, {").replace("}{", "}, {")
    for c in "}]":
        s = s.replace(f",\n{c}", f"\n{c}").replace(f", \n{c}", f"\n{c}").replace(f", {c}", c).replace(f",{c}", c)
    return s.replace("[Placeholder]", "null").replace("{Events:", "").strip()


def parse_entailment(reply: str, events: list[str]) -> tuple[int, list[Any]]:
    """(entailed count, the judge's filled list) of a reply about `events`; ValueError when it does not parse, has
    the wrong count (0 events take exactly 0 or 1 item) or a label outside entailment|neutral|contradiction."""
    try:
        filled = json.loads(clean_entailment(reply))["events"]
        labels = [e["relationship"].strip().lower() for e in filled]
    except Exception as e:  # not JSON, a missing key, an item that is not an object: re-asked, as there
        raise ValueError(f"invalid reply ({type(e).__name__}: {e})") from None
    if not (len(events) == len(filled) or (len(events) == 0 and len(filled) == 1)):
        raise ValueError(f"{len(filled)} items for {len(events)} events")
    if any(label not in LABELS for label in labels):
        raise ValueError(f"a relationship outside {LABELS}: {labels}")
    return sum(label == "entailment" for label in labels), filled


def _ask(judge: Judge, prompt: str, parse, what: str) -> Any:
    """`parse` of the judge's reply; re-asked (next attempt number) until one parses, at most MAX_RETRY times."""
    last: Exception | None = None
    for attempt in range(MAX_RETRY):
        try:
            return parse(judge.chat([{"role": "user", "content": prompt}], attempt).text)
        except (JudgeError, ValueError) as e:
            last = e
    raise Failed(f"{what}: no valid judge reply in {MAX_RETRY} tries (last: {last})")


def _extract(judge: Judge, description: str, what: str) -> list[str]:
    return _ask(judge, fill(EXTRACT_TEMPLATE, caption=description.replace('"', "'")), parse_events, what)


def _entail(judge: Judge, events: list[str], fallback: str, description: str) -> tuple[float, list, str]:
    """(score, filled list, "hit: k / n") of `events` against `description`; an empty list is sent as `fallback`."""
    listed = events or [fallback.replace("\n", " ")]
    prompt = fill(ENTAIL_TEMPLATE, prediction=description, events=str(listed))
    hits, filled = _ask(judge, prompt, lambda text: parse_entailment(text, events), "entailment")
    return (hits / len(events) if events else 1.0), filled, f"hit: {hits} / {len(events)}"


def score_video(judge: Judge, sample: dict[str, Any]) -> dict[str, Any]:
    """One video (`idx`, `dataset`, `reference`, `prediction`, `events` (None: extracted from the reference),
    `extra_info`) -> {success, score_r, score_p, info (the official per-video record)} or {success: False, error}."""
    response, prediction = sample["reference"].lower(), sample["prediction"].lower()
    head = {"idx": sample["idx"], "dataset": sample["dataset"], "extra_info": sample.get("extra_info") or {}}
    try:
        gt = sample["events"] if isinstance(sample["events"], list) else _extract(judge, response, "reference events")
        pred = _extract(judge, prediction, "caption events")
        score_r, filled_r, hit_r = _entail(judge, gt, response, prediction)
        score_p, filled_p, hit_p = _entail(judge, pred, prediction, response)
    except Failed as e:
        return {**head, "success": False, "error": str(e)}
    return {**head, "success": True, "score_r": score_r, "score_p": score_p, "info": {
        "idx": sample["idx"], "gt": response, "pred": prediction, "events_gt": filled_r, "hit_num_recall": hit_r,
        "events_pred": filled_p, "hit_num_precision": hit_p}}


def f1(r: float, p: float) -> float:
    return 2 * r * p / (r + p) if r + p else math.nan


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _rpf(results: list[dict[str, Any]]) -> dict[str, float]:
    r, p = _mean([x["score_r"] for x in results]), _mean([x["score_p"] for x in results])
    return {"f1": f1(r, p), "recall": r, "precision": p}


def aggregate(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The official tables from per-video results (`score_video`; duplicates of an idx: the first wins): per source
    (sorted) F1 / recall / precision / success / failed, OVERALL (mean of the sources' R and P), and buckets."""
    ok: dict[str, list] = defaultdict(list)
    failed: Counter[str] = Counter()
    for r in {r["idx"]: r for r in reversed(results)}.values():
        (ok[r["dataset"]].append(r) if r["success"] else failed.update([r["dataset"]]))
    sources = {s: {**_rpf(ok[s]), "success": len(ok[s]), "failed": failed[s]} for s in sorted(ok)}
    r, p = _mean([s["recall"] for s in sources.values()]), _mean([s["precision"] for s in sources.values()])
    overall = {"f1": f1(r, p), "recall": r, "precision": p, "success": sum(len(v) for v in ok.values()),
               "failed": sum(failed.values())}
    done = [x for v in ok.values() for x in v]
    in_bucket = {name: {k: [x for x in done if rule(x["extra_info"].get(f"n_{name}", math.nan))]
                        for k, rule in keys.items()} for name, keys in BUCKETS.items()}
    buckets = {name: {k: {**_rpf(v), "count": len(v)} for k, v in keys.items()} for name, keys in in_bucket.items()}
    return {"sources": sources, "overall": overall, "buckets": buckets}


def table_lines(tables: dict[str, Any]) -> list[str]:
    """The official result table and bucket tables (values rounded to 3 decimals, as printed there)."""
    def cells(*values: Any) -> str:
        return "| " + " | ".join("nan" if isinstance(v, float) and math.isnan(v) else str(
            round(v, 3) if isinstance(v, float) else v) for v in values) + " |"

    lines = [cells("Task", "F1 Score", "Action Recall", "Action Precision", "Success", "Failed"), "|---" * 6 + "|"]
    lines += [cells(name, *(row[k] for k in ("f1", "recall", "precision", "success", "failed")))
              for name, row in [*tables["sources"].items(), ("OVERALL", tables["overall"])]]
    for name, b in tables["buckets"].items():
        lines += ["", f"By number of {name}:", "", cells("Score", *b), "|---" * (len(b) + 1) + "|"]
        lines += [cells(label, *(c[label.lower()] for c in b.values())) for label in ("Recall", "Precision", "F1")]
        lines.append(cells("Count", *(c["count"] for c in b.values())))
    return lines
