"""The lmms-eval lane's local task (`synthetic_lmms`, written by tests/lmms/test_lmms_eval.py): the synthetic
benchmark's questions as an lmms-eval task, in lmms-eval's own conventions (a JSON dataset, `doc_to_visual` giving
the video path, and its shared multiple-choice extractor for scoring, as its lvbench task does)."""

# The Vamba release's multiple-choice instruction, as docs/protocols.md quotes it for LVBench (the synthetic benchmark's
# prompt); written out here, not imported, so the lane shows that `vamba eval` sends this same text.
PROMPT = ("Select the best answer to the following multiple-choice question based on the video.\n"
          "Respond with only the letter (A, B, C, or D) of the correct option.\n")


def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return PROMPT + doc["question"]


def process_results(doc, results):
    from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer

    return {"synthetic_score": float(extract_mcq_answer(results[0], choices=["A", "B", "C", "D"]) == doc["answer"])}
