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
#: The release's 20 stage-1 user prompts, one drawn per sample (TIGER-AI-Lab/Vamba `train/data_utils.py`
#: `captioning_templates["user"]`, formatted with the dataset type, "image"); `caption_prompt: release` uses them.
RELEASE_CAPTION_PROMPTS = tuple(t.format("image") for t in (
    "Describe what is happening in this {}.", "What is shown in the {}?", "Explain the content of this {}.",
    "What can be seen in the {}?", "Summarize what is depicted in the {}.", "What does the {} illustrate?",
    "Provide a description of the {}.", "What is the scene in the {} about?", "Detail what occurs in the {}.",
    "What story does the {} tell?", "Describe the events in the {}.", "What can you observe in the {}?",
    "Explain the scenario in the {}.", "What is the main focus of the {}?", "Outline what happens in the {}.",
    "What is the highlight of the {}?", "Describe the activity in the {}.", "What is the {} showing?",
    "Give an overview of the {} content.", "What is captured in the {}?",
))
