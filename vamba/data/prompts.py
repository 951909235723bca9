"""Prompt text that training data, the tiny tokenizer and evaluation share (a leaf module: all of them import it).

`VAMBA_HEAD` + `RESPOND_ABCD` is the multiple-choice instruction of the Vamba release's evaluation scripts (its
LVBench prompt is the two lines, then the question); the synthetic training conversations use the same words so
that training looks like what evaluation asks.
"""

#: Vamba's instruction head, shared by its evaluation scripts.
VAMBA_HEAD = "Select the best answer to the following multiple-choice question based on the video."
#: The release's instruction tail for four options (its scripts write the letter list literally).
RESPOND_ABCD = "Respond with only the letter (A, B, C, or D) of the correct option."
#: The user turn of a stage-1 image-caption sample.
CAPTION_PROMPT = "Describe the image."
