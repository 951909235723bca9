"""Caption benchmarks: a caption per image or video, scored after generation by an LLM judge (`vamba.evals.judge`).

`benchmark=captions annotation=<file.jsonl>` scores with G-VEval (`judge.gveval_prompts=<checkout of ztangaj/gveval>`,
`judge.gveval_mode`, `judge.accr`); per line `id`, one of `image` / `video` (under data_dir, or absolute),
`references` (a training caption file's `caption` is one reference: the distillation sweep scores its own data) and
optional `prompt` (default "Describe the video in detail." / training's "Describe the image."). Images are read whole,
as in training; videos as 16 frames with the first and last (Tarsier2's sampler); greedy, 512 new tokens. The judge
is checked at start-up; without one captions are generated unscored. Rank 0 judges after every rank is done.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from vamba.data.prompts import CAPTION_PROMPT
from vamba.evals import gveval
from vamba.evals.benchmark import AnnotationError, Benchmark, Question, check_unique, read_jsonl
from vamba.evals.judge import Judge, report_lines
from vamba.evals.protocol import PROTOCOLS, Settings
from vamba.evals.report import atomic_write
from vamba.modeling.errors import UsageError

VIDEO_PROMPT = "Describe the video in detail."


def tarsier_indices(total: int, n: int) -> np.ndarray:
    """Tarsier2's `sample_frame_indices`, first and last frame included (Python's round: halves to even)."""
    return np.asarray([0] if n == 1 else [round(i * (total - 1) / (n - 1)) for i in range(n)], dtype=np.int64)


class Captions(Benchmark):
    name = "captions"
    default_annotation = "captions.jsonl"
    settings = {p: Settings(16, sampler="tarsier", longest_edge=None) for p in PROTOCOLS}
    metric = "G-VEval"
    official_rule_text = ("G-VEval (ztangaj/gveval): the 0-100 score expected under the judge's top-5 logprobs; "
                          "samples without a score after 3 tries dropped and counted; mean over scored samples")

    def load(self, data_dir: Path, annotation: Path | None = None) -> list[Question]:
        path = self.annotation_path(data_dir, annotation)
        questions = []
        for lineno, row in read_jsonl(path):
            try:
                questions.append(self._question(row, f"{path}:{lineno}"))
            except (AnnotationError, AttributeError, KeyError, TypeError) as e:
                questions.append(self.broken(f"{path.name}:{lineno}", e if isinstance(e, AnnotationError) else
                                             f"{path}:{lineno}: malformed record ({type(e).__name__}: {e})"))
        check_unique(questions, str(path))
        return questions

    def _question(self, row: dict[str, Any], where: str) -> Question:
        kinds = [k for k in ("image", "video") if row.get(k)]
        if len(kinds) != 1:
            raise AnnotationError(f"{where}: needs exactly one of the fields 'image', 'video'")
        kind = kinds[0]
        refs = row["references"] if "references" in row else [row.get("caption")]
        if not (isinstance(refs, list) and refs and all(isinstance(r, str) and r.strip() for r in refs)):
            raise AnnotationError(f"{where}: field 'references' must be a non-empty list of non-empty strings")
        return Question(qid=str(row.get("id", row[kind])), video=str(row[kind]),
                        question=row.get("prompt") or (VIDEO_PROMPT if kind == "video" else CAPTION_PROMPT),
                        options=[], answer=None, categories={"kind": [kind]},
                        extra={"image": kind == "image", "references": refs})

    def sampler(self, q: Question, settings: Settings, frames: int):
        if settings.sampler == "tarsier":
            return lambda total, fps: tarsier_indices(total, frames)
        return super().sampler(q, settings, frames)

    def prompt(self, q: Question, protocol: str = "official", subtitles: str | None = None) -> str:
        return q.question

    def extract(self, response: str | None, q: Question, protocol: str = "official") -> str | None:
        return None  # a caption has no letter; the judge scores it

    judge_preset: dict[str, Any] = gveval.JUDGE

    def scorer(self, cfg: Any):
        judge = Judge(cfg.judge, self.judge_preset, self.name, Path(cfg.output_dir) / "judge_cache")
        context = self.prepare(cfg, judge) if judge.configured else {}
        judge.check()
        data_dir = Path(cfg.data_dir or ".")
        return lambda records, questions, out, protocol: self.score(
            judge, context, data_dir, records, {q.qid: q for q in questions}, Path(out), protocol)

    def prepare(self, cfg: Any, judge: Judge) -> dict[str, Any]:
        """What scoring needs, checked at start-up: the verified G-VEval prompts for images and videos."""
        j = cfg.judge
        if not j.gveval_prompts:
            raise UsageError(f"benchmark={self.name} scores with G-VEval, whose prompt files are read from your "
                             f"checkout of https://github.com/ztangaj/gveval: set judge.gveval_prompts=<folder>")
        names = {v: gveval.prompt_name(v, j.gveval_mode, j.accr) for v in ("img", "vid")}
        return {"mode": j.gveval_mode, "accr": j.accr,
                "prompts": {v: gveval.load_prompt(j.gveval_prompts, name) for v, name in names.items()}}

    def summary(self, judge: Judge, records: list, protocol: str, headline: float | None, lines: list[str],
                **extra: Any) -> dict[str, Any]:
        rule = self.official_rule_text + ("" if protocol == "official" or not self.release_note
                                          else f". Release protocol: {self.release_note}")
        if not judge.configured:
            lines = ["Not scored: no judge configured (set judge.base_url=<endpoint>, or judge.cache_only=true to "
                     "replay a cache). The captions are in results.jsonl."]
        return {"benchmark": self.name, "scoring": protocol, "rule": rule, "metric": self.metric,
                "headline": None if headline is None or math.isnan(headline) else headline, "questions": len(records),
                "errors": sum(bool(r.get("error")) for r in records),
                "judge": judge.identity() if judge.configured else None, **extra,
                "lines": [*lines, "", *(report_lines(judge.identity()) if judge.configured else [])]}

    def score(self, judge: Judge, ctx: dict[str, Any], data_dir: Path, records: list, by_id: dict[str, Question],
              out: Path, protocol: str) -> dict[str, Any]:
        todo = [(r, by_id[r["qid"]]) for r in records if not r.get("error") and r["qid"] in by_id]
        if not judge.configured:
            return self.summary(judge, records, protocol, None, [])

        def one(item: tuple[dict, Question]) -> dict[str, Any]:
            r, q = item
            path = Path(q.video) if Path(q.video).is_absolute() else data_dir / q.video
            image = q.extra["image"]
            try:
                picture = path.read_bytes() if image else gveval.composite(path)
            except (OSError, ValueError) as e:
                return {"qid": q.qid, "success": False, "error": f"picture: {e}"}
            prompt = gveval.render(ctx["prompts"]["img" if image else "vid"], r["response"], q.extra["references"])
            return {"qid": q.qid, **gveval.score_sample(judge, prompt, picture, "low" if image else "high",
                                                        ctx["accr"] and not image)}

        results = judge.map(one, todo)
        atomic_write(out / "gveval_records.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))
        stats = gveval.summarize(results, ctx["mode"], ctx["accr"])
        accr = ", ".join(f"{k} {v:.2f}" for k, v in stats.get("accr", {}).items())
        lines = [f"**G-VEval ({stats['mode']}{', ACCR' if ctx['accr'] else ''}): {stats['score']:.2f}** over "
                 f"{stats['success']} scored captions; {stats['failed']} without a score (dropped)"
                 + (f"; ACCR means: {accr}" if accr else ""),
                 "", f"Generation errors (not scored): {len(records) - len(todo)}; per caption: gveval_records.jsonl"]
        return self.summary(judge, records, protocol, stats["score"], lines, gveval=stats)


BENCHMARK = Captions()
