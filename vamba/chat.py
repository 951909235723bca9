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

from pathlib import Path

import torch

from .data.frames import FrameSpec
from .data.processor import VambaProcessor
from .data.video import load_video
from .evals.inference import EvalModelConfig, answer, encode, load_model
from .modeling.errors import ArgParser, UsageError


def load(path: str | Path, model_type: str = "vamba", device: str | None = None, processor: str | None = None):
    """(model, processor) from a checkpoint directory; `processor='tiny'` for checkpoints without tokenizer files."""
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return load_model(EvalModelConfig(path=str(path), type=model_type, processor=processor), dev)


def ask(
    model,
    processor: VambaProcessor,
    video: str | Path,
    question: str,
    frames: FrameSpec | int = 64,
    max_new_tokens: int = 128,
    stream_chunk: int | None = None,
    video_token_keep: float | None = None,
    choices: list[str] | None = None,
) -> str:
    """Answer `question` about `video` (greedy decoding); with `choices`, as a multiple-choice question. `frames`:
    a `FrameSpec` (`vamba.data.frames`), or a frame count; unset pixel bounds take the processor's."""
    if choices:
        question = multiple_choice_prompt(question, choices)
    v = processor.vision
    spec = frames if isinstance(frames, FrameSpec) else FrameSpec(count=frames)
    clip = load_video(video, spec.fill(min_pixels=v.min_pixels, max_pixels=v.max_pixels))
    messages = [
        {"role": "user", "content": [{"type": "video", "video": clip.frames}, {"type": "text", "text": question}]}
    ]
    encoded = encode(model, processor, clip.frames, chunk_frames=stream_chunk, video_token_keep=video_token_keep)
    generation = {"max_new_tokens": max_new_tokens, "do_sample": False}
    return answer(model, processor, messages, encoded, generation, video_token_keep=video_token_keep)[1].strip()


def multiple_choice_prompt(question: str, choices: list[str]) -> str:
    """`question` with lettered `choices` in the LVBench prompt (what `vamba eval` asks; 2 to 26 choices)."""
    from .evals.benchmark import VAMBA_HEAD, letter_list, option_lines

    if not 2 <= len(choices) <= 26:
        raise UsageError(f"choices: give 2 to 26 options, got {len(choices)}")
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: len(choices)]
    return (f"{VAMBA_HEAD}\nRespond with only the letter ({letter_list(letters)}) of the correct option.\n"
            f"{question}\n{option_lines(list(choices), 'paren')}")


def main(argv: list[str]) -> int:
    parser = ArgParser(prog="vamba chat", description="Ask a model about a video.")
    parser.add_argument("question")
    parser.add_argument("--model", required=True, help="checkpoint directory")
    parser.add_argument("--video", required=True, help="video file")
    parser.add_argument("--model-type", choices=["vamba", "qwen2_vl"], default="vamba")
    parser.add_argument("--processor", default=None, help="processor directory (default: the model's); 'tiny'")
    parser.add_argument("--frames", type=int, default=64, help="frames (uniform); with --fps, the most frames")
    parser.add_argument("--fps", type=float, default=None, help="sample this many frames per second of video")
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
                FrameSpec(mode="fps" if args.fps else None, count=args.frames, fps=args.fps),
                args.max_new_tokens,
                args.stream_chunk,
                args.video_token_keep,
                choices,
            )
        )
    return 0
