"""Chat with a model about a video: `vamba chat --model DIR --video FILE "question"`, or from Python:

    from vamba.chat import load, ask
    model, processor = load("outputs/quickstart/vamba-stage2/final")
    print(ask(model, processor, "clip.mp4", "What color was the circle that appeared in the video?", frames=16,
              choices=["red", "green", "blue", "yellow"]))

With `choices` the question is asked as a multiple-choice question in the LVBench prompt that `vamba eval` and the
synthetic training data use (the reply is then a letter). Long videos can be streamed through the network
`stream_chunk` frames at a time (bounded activation memory).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .data.processor import VambaProcessor, patchify
from .data.video import load_video


def load(path: str | Path, model_type: str = "vamba", device: str | None = None, processor: str | None = None):
    """(model, processor) from a checkpoint directory; `processor='tiny'` for checkpoints without tokenizer files."""
    from .evals.runner import EvalModelConfig, load_model

    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return load_model(EvalModelConfig(path=str(path), type=model_type, processor=processor), dev)


def ask(
    model,
    processor: VambaProcessor,
    video: str | Path,
    question: str,
    frames: int = 64,
    max_new_tokens: int = 128,
    stream_chunk: int | None = None,
    video_token_keep: float | None = None,
    choices: list[str] | None = None,
) -> str:
    """Answer `question` about `video` (greedy decoding); with `choices`, as a multiple-choice question."""
    if choices:
        question = multiple_choice_prompt(question, choices)
    v = processor.vision
    clip = load_video(video, num_frames=frames, min_pixels=v.min_pixels, max_pixels=v.max_pixels)
    messages = [
        {"role": "user", "content": [{"type": "video", "video": clip.frames}, {"type": "text", "text": question}]}
    ]
    device = next(model.parameters()).device
    gen = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
    if processor.layout == "vamba":
        pixels, grid = patchify(clip.frames, v)
        cache = model.encode_video(
            pixel_values_videos=pixels.to(device, model.dtype),
            video_grid_thw=grid[None].to(device),
            chunk_frames=stream_chunk,
            video_token_keep=video_token_keep,
        )
        text = processor.render(messages, add_generation_prompt=True)
        ids = processor.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=cache.fork(), **gen)
    else:
        batch = {k: t.to(device) for k, t in processor(messages, add_generation_prompt=True).items() if k != "labels"}
        ids = batch["input_ids"]
        out = model.generate(**batch, **gen)
    return processor.decode(out[0, ids.shape[1] :]).strip()


def multiple_choice_prompt(question: str, choices: list[str]) -> str:
    """`question` with lettered `choices` in the LVBench prompt (what `vamba eval` asks; 2 to 26 choices)."""
    from .evals.benchmark import VAMBA_HEAD, letter_list, option_lines

    if not 2 <= len(choices) <= 26:
        raise ValueError(f"choices: give 2 to 26 options, got {len(choices)}")
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: len(choices)]
    return (f"{VAMBA_HEAD}\nRespond with only the letter ({letter_list(letters)}) of the correct option.\n"
            f"{question}\n{option_lines(list(choices), 'paren')}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vamba chat", description="Ask a model about a video.")
    parser.add_argument("question")
    parser.add_argument("--model", required=True, help="checkpoint directory")
    parser.add_argument("--video", required=True, help="video file")
    parser.add_argument("--model-type", choices=["vamba", "qwen2_vl"], default="vamba")
    parser.add_argument("--processor", default=None, help="processor directory (default: the model's); 'tiny'")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--stream-chunk", type=int, default=None, help="stream the video this many frames at a time")
    parser.add_argument("--video-token-keep", type=float, default=None, help="keep this fraction of video tokens")
    parser.add_argument("--choices", default=None,
                        help="comma-separated options: ask a multiple-choice question (LVBench prompt), e.g. red,blue")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    choices = [c.strip() for c in args.choices.split(",") if c.strip()] if args.choices else None
    model, processor = load(args.model, args.model_type, args.device, args.processor)
    with torch.no_grad():
        print(
            ask(
                model,
                processor,
                args.video,
                args.question,
                args.frames,
                args.max_new_tokens,
                args.stream_chunk,
                args.video_token_keep,
                choices,
            )
        )
    return 0
