"""The project's synthetic benchmark (`vamba.data.synthetic`): needle questions in exactly the LVBench schema.

Data dir = the generator's output dir: `video_info.meta.jsonl` (eval split) + `videos/<key>.mp4`. The LVBench
loader and prompt are reused, so the synthetic prompt is the one training conversations use (Vamba's LVBench
prompt) and a quickstart exercises the real LVBench path. Categories: `question_type` (the task and its LVBench-like
category). Official scoring here is the project's own: the lmms-eval extractor with option-text fallback (training
also writes sentence answers such as "The answer is (B) red."), unparsed wrong, pooled accuracy.
"""

from __future__ import annotations

from vamba.evals.benchmarks.lvbench import LVBench


class Synthetic(LVBench):
    name = "synthetic"
    official_rule = "lmms"
    official_text_fallback = True
    official_rule_text = ("synthetic: lmms-eval format-priority letter extraction, else the one option whose text "
                          "the reply names; unparsed and errors wrong; pooled accuracy")


BENCHMARK = Synthetic()
