"""The project's synthetic benchmark (`vamba.data.synthetic`): needle questions in exactly the LVBench schema.

Data dir = the generator's output dir: `video_info.meta.jsonl` (eval split) + `videos/<key>.mp4`. The LVBench
loader and prompt are reused, so the synthetic prompt is the one training conversations use (Vamba's LVBench
prompt) and a quickstart exercises the real LVBench path. Categories: `question_type` (the task and its LVBench-like
category). Both protocols read 64 frames with the project's sampler (segment middles, which the needles are placed
for) at the processor's own size. Official scoring here is the project's own: the `priority` rule with option-text
fallback (training also writes sentence answers such as "The answer is (B) red."), unparsed wrong, pooled.
"""

from __future__ import annotations

from vamba.evals import answer as answer_rules
from vamba.evals.benchmark import Question
from vamba.evals.benchmarks.lvbench import LVBench
from vamba.evals.protocol import Settings


class Synthetic(LVBench):
    name = "synthetic"
    settings = {p: Settings(64, sampler="uniform", longest_edge=None, max_new_tokens=16)
                for p in ("official", "release")}
    official_rule = "priority"
    official_rule_text = ("synthetic: the project's format-priority letter rule, else the one option whose text "
                          "the reply names; unparsed and errors wrong; pooled accuracy")
    release_note = ""

    def extract(self, response: str | None, q: Question, protocol: str = "official") -> str | None:
        letter = super().extract(response, q, protocol)
        if letter is None and protocol == "official":
            letter = answer_rules.match_option_text(response, q.options)
        return letter


BENCHMARK = Synthetic()
