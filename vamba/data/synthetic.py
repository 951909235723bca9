"""Synthetic long-video data: real mp4 files plus LVBench-style questions, LLaVA conversations and image captions.

Why: every Vamba path (stage-1 pretraining on captions, stage-2 tuning on video conversations, LVBench-style
evaluation) must run on a CPU laptop with no downloads, and a TINY model (2 layers, width 128, 28-56 px frames)
must be able to *learn* something in minutes so that a quickstart shows accuracy rising above chance.

What is drawn. Every frame is dark, low-contrast grey noise that changes every frame. A *needle* is a large,
bright, saturated shape (colour from `PALETTE`, shape from `SHAPES`) shown for a short run of frames; it is the only
salient thing in the video. A video holds several needle *kinds* (colour + shape; within one video every kind has
its own colour and its own shape, so "the red object" and "the triangle" each name one kind), and a kind may appear
several times (*episodes*). Questions (4 options, chance 25%) need the whole video:

- ``needle_color``: "What color was the triangle that appeared in the video?"
- ``needle_shape``: "What shape was the red object that appeared in the video?"
- ``order``: "Which of these objects appeared first in the video?" (options: kinds; at least two appear)
- ``count``: "How many times did the red square appear in the video?"

Seeing the needles when sampling frames. A consumer samples ``N = eval_frames`` frames uniformly (default: all
frames) with the project's one sampler, `vamba.data.video.sample_indices` (middle frame of N equal segments). The
generator cuts the video into ``N/2`` *slots*, one per temporal patch: slot k holds that sampler's frames 2k and
2k+1 and no other sampled frame (boundaries sit halfway between neighbouring pairs, see `_slot_bounds`). Each
needle episode fills one whole slot, so:

- with the project's sampler (`load_video(..., num_frames=N)`), sampled frames 2k and 2k+1 both show the needle:
  it fills one whole 2-frame temporal patch of Qwen2-VL's vision tower and touches no other patch (always);
- the boundaries also respect ``floor(linspace(0, T-1, N))`` (the original Vamba eval sampler) whenever ``T == N``
  or its stride ``(T-1)/(N-1)`` is at least 2, and ``round(linspace(...))`` (qwen-vl-utils) whenever the stride is
  1 or at least 1.5 (checked exhaustively for T < 400);
- with all ``T`` frames an episode spans at least 2 consecutive frames (an aligned pair when ``T == N``); with
  fewer than ``N`` frames a needle may fall between samples, so generate with the ``eval_frames`` you will use.

Two episodes of the same kind never occupy adjacent slots, so every episode is a separate event (counts are exact).

Outputs under ``out_dir`` (see `generate`): ``videos/<key>.mp4``; ``video_info.meta.jsonl`` (eval split, exactly the
LVBench schema); ``train_video_info.meta.jsonl`` (same schema for the train split); ``train.json`` / ``train.jsonl``
(LLaVA conversations); ``images/<id>.png`` + ``captions.jsonl`` (stage-1 pairs); ``needles_eval.json`` /
``needles_train.json`` (machine-checkable ground truth); ``synthetic_config.json`` (written last; marks a complete
run and lets an identical later call skip work). Every file is written to a temporary name and renamed.

Determinism: the same config gives byte-identical annotations and images and identical decoded frames (encoders run
single-threaded). Train, eval and images draw from separate random streams and use distinct keys.

Learnability (measured with this generator; stock tiny Qwen2-VL: 2 layers, width 128, 2-block vision tower of
width 64, patch 14; 28 px frames, i.e. one visual token per frame pair; AdamW lr 1e-3, batch 8; ``needle_color``,
one needle, the LVBench prompt with system prompt; eval accuracy on held-out videos):

- Prompt length: with the byte-level tiny tokenizer the prompt is ~310 tokens, with the tokenizer's word merges
  (`build_tiny_tokenizer(merges=256)`, same text) ~93. 8-frame videos, 200 of them, 600 steps: merges 100% from
  step 400 (20 s); bytes peak at 79% and end at 62% (50 s). With the curriculum below both reach 100% by step 400,
  the merges 2.5x faster per step. (An earlier comparison that had bytes "at chance" was cut at 200 steps.)
- Video length needs a curriculum and enough videos: 16-frame videos alone stay near chance after 600 steps (200
  videos); 1,200 videos of 4, 8 and 16 frames mixed (``train_frames_schedule=(4, 8, 16)``) give 100% on 16-frame
  eval videos within 400 steps. 32 frames (schedule 4..32, 1,600 videos, 1,500 steps): 55%.
- Option order: with four colours in a fixed order (``option_order="fixed"``) the letter names the colour; with
  random order the model must also match the colour to the option text, and stayed at chance after 1,000 steps.
  Mixing ``needle_color`` and ``needle_shape`` questions: 69% after 2,500 steps (shapes are ~17 px here).

Answering through option letters is harder for a tiny model than naming the colour, so ``answer_style`` also offers
``text`` (the option's text) and ``sentence`` ("The answer is (B) red.") replies.

Needs PyAV (``pip install av``; the ``data`` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import struct
import sys
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 2  # bump when the same config would produce different files
CONFIG_FILE = "synthetic_config.json"
EVAL_META_FILE = "video_info.meta.jsonl"
TRAIN_META_FILE = "train_video_info.meta.jsonl"
TRAIN_JSON = "train.json"
TRAIN_JSONL = "train.jsonl"
CAPTIONS_FILE = "captions.jsonl"
VIDEO_DIR = "videos"
IMAGE_DIR = "images"
LETTERS = ("A", "B", "C", "D")

#: Bright saturated colours, far apart in RGB so that yuv420p compression cannot confuse them.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "orange": (255, 140, 0),
    "yellow": (245, 230, 20),
    "green": (30, 200, 50),
    "cyan": (0, 210, 230),
    "blue": (30, 70, 255),
    "purple": (180, 40, 230),
}
#: Shapes, each filling the square [-1, 1]^2 of its own frame of reference (so its bounding box gives centre + size).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond")
TASKS: tuple[str, ...] = ("needle_color", "needle_shape", "order", "count")
#: Second label per task, naming the LVBench category it resembles (LVBench questions are multi-label).
LVBENCH_CATEGORY: dict[str, str] = {
    "needle_color": "entity recognition",
    "needle_shape": "entity recognition",
    "order": "event understanding",
    "count": "key information retrieval",
}
#: Image positions used in captions: name -> (row, column) of the shape's centre as fractions of the image.
POSITIONS: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5),
    "top left": (0.28, 0.28),
    "top right": (0.28, 0.72),
    "bottom left": (0.72, 0.28),
    "bottom right": (0.72, 0.72),
}
#: Vamba's LVBench prompt, so that training conversations look like what evaluation asks.
LETTER_INSTRUCTION = (
    "Select the best answer to the following multiple-choice question based on the video.\n"
    "Respond with only the letter (A, B, C, or D) of the correct option."
)
SENTENCE_INSTRUCTION = (
    "Select the best answer to the following multiple-choice question based on the video.\n"
    "Answer with one short sentence that names the letter of the correct option."
)
TEXT_INSTRUCTION = (
    "Select the best answer to the following multiple-choice question based on the video.\n"
    "Respond with only the text of the correct option."
)
#: Training reply forms: (instruction, reply template over the answer letter and option text).
ANSWER_STYLES: dict[str, tuple[str, str]] = {
    "letter": (LETTER_INSTRUCTION, "{letter}"),
    "sentence": (SENTENCE_INSTRUCTION, "The answer is ({letter}) {text}."),
    "text": (TEXT_INSTRUCTION, "{text}"),
}
CAPTION_TEMPLATES: tuple[str, ...] = (
    "A {color} {shape} in the {position} of the image.",
    "A {color} {shape} on a dark noisy background, at the {position}.",
    "The image shows a {color} {shape} in the {position}.",
)


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines the generated data (stored as ``synthetic_config.json``; equal config = skip).

    Sizes: ``width``/``height`` in 28..640, even (yuv420p); multiples of 28 avoid resizing in Qwen2-VL.
    ``eval_frames`` is the number of uniformly sampled frames the consumer will feed the model (None = all
    ``num_frames``); needles are laid on that sampling grid (see the module docstring). ``train_frames_schedule``,
    if given, replaces ``num_frames`` for the train split: train videos are split into equal consecutive blocks of
    those lengths (a curriculum; each video's sampling grid is ``min(eval_frames, length)``).
    """

    train_videos: int = 32
    eval_videos: int = 8
    questions_per_video: int = 6
    num_frames: int = 64
    train_frames_schedule: tuple[int, ...] = ()
    eval_frames: int | None = None
    fps: float = 4.0
    width: int = 56
    height: int = 56
    seed: int = 0
    tasks: tuple[str, ...] = TASKS
    colors: tuple[str, ...] = tuple(PALETTE)
    shapes: tuple[str, ...] = SHAPES
    max_needles: int = 4
    max_count: int = 4
    needle_scale: float = 0.6
    needle_jitter: float = 0.1
    noise_mean: int = 40
    noise_amplitude: int = 8
    noise_cell: int = 2
    codec: str = "auto"
    keyframe_interval: int = 16
    crf: int = 18
    num_images: int = 64
    image_scale: float = 0.45
    answer_style: str = "letter"
    option_order: str = "random"  # "fixed": colour/shape options in the config's list order (see _options)
    video_type: str = "synthetic"

    def __post_init__(self) -> None:
        # Lists from JSON/argparse become tuples so the config stays hashable and compares equal after a round trip.
        for name in ("train_frames_schedule", "tasks", "colors", "shapes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("fps", "needle_scale", "needle_jitter", "image_scale"):  # 4 and 4.0 must compare (and print) equal
            object.__setattr__(self, name, float(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Fail early with a clear message instead of producing unanswerable or degenerate questions."""
        if self.train_videos < 0 or self.eval_videos < 0 or self.num_images < 0:
            raise ValueError("video and image counts must be >= 0")
        if self.questions_per_video < 1:
            raise ValueError("questions_per_video must be >= 1")
        for size in (self.width, self.height):
            if not 28 <= size <= 640 or size % 2:
                raise ValueError(f"frame sizes must be even and in 28..640, got {self.width}x{self.height}")
        if self.option_order not in ("random", "fixed"):
            raise ValueError(f"option_order must be 'random' or 'fixed', got {self.option_order!r}")
        if not self.tasks or set(self.tasks) - set(TASKS):
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {self.tasks}")
        if set(self.colors) - set(PALETTE) or len(set(self.colors)) != len(self.colors) or len(self.colors) < 4:
            raise ValueError(f"colors: at least 4 distinct names from {tuple(PALETTE)}")
        if set(self.shapes) - set(SHAPES) or len(set(self.shapes)) != len(self.shapes) or len(self.shapes) < 4:
            raise ValueError(f"shapes: at least 4 distinct names from {SHAPES}")
        if not 1 <= self.max_needles <= min(len(self.colors), len(self.shapes)):
            raise ValueError("max_needles must be in 1..min(len(colors), len(shapes)) (kinds differ in both)")
        if self.max_count < 1:
            raise ValueError("max_count must be >= 1")
        if "order" in self.tasks and self.tasks == ("order",) and self.max_needles < 2:
            raise ValueError("the order task needs max_needles >= 2")
        if self.fps <= 0:
            raise ValueError("fps must be > 0")
        if self.codec not in ("auto", "libx264", "mpeg4"):
            raise ValueError("codec must be auto, libx264 or mpeg4")
        if self.keyframe_interval < 1:
            raise ValueError("keyframe_interval must be >= 1")
        if self.answer_style not in (*ANSWER_STYLES, "mixed"):
            raise ValueError(f"answer_style must be one of {(*ANSWER_STYLES, 'mixed')}")
        if not 0.1 <= self.needle_scale <= 1.0 or not 0.1 <= self.image_scale <= 0.5:
            raise ValueError("needle_scale must be in [0.1, 1], image_scale in [0.1, 0.5]")
        if self.eval_frames is not None and (self.eval_frames < 2 or self.eval_frames % 2):
            raise ValueError("eval_frames must be even and >= 2 (frames are paired into temporal patches)")
        lengths = [self.num_frames, *self.train_frames_schedule]
        for length in lengths:
            if self.grid_size(length) < 2:
                raise ValueError(f"video length {length} gives fewer than 2 sampled frames")
            if length < 2:
                raise ValueError("videos need at least 2 frames")
        if "order" in self.tasks and self.tasks == ("order",) and min(self.grid_size(n) for n in lengths) < 4:
            raise ValueError("the order task needs at least 4 sampled frames (2 slots)")

    def grid_size(self, num_frames: int) -> int:
        """Sampled frames per video of this length: ``eval_frames`` capped by the length, rounded down to even."""
        n = num_frames if self.eval_frames is None else min(self.eval_frames, num_frames)
        return n - n % 2

    def train_lengths(self) -> list[int]:
        """Frame count of every train video, in order (curriculum blocks, shortest first as listed)."""
        if not self.train_frames_schedule:
            return [self.num_frames] * self.train_videos
        blocks = len(self.train_frames_schedule)
        return [self.train_frames_schedule[min(i * blocks // max(self.train_videos, 1), blocks - 1)]
                for i in range(self.train_videos)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyntheticConfig:
        """Inverse of `to_dict`; unknown keys are an error so a typo cannot silently change nothing."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown SyntheticConfig keys: {sorted(unknown)}")
        return cls(**data)


@dataclass
class SyntheticDataset:
    """What `generate` wrote (paths are absolute) and how much of it."""

    root: Path
    config: SyntheticConfig
    eval_meta: Path
    train_meta: Path
    train_json: Path
    train_jsonl: Path
    captions: Path
    needles_eval: Path
    needles_train: Path
    eval_videos: list[Path] = field(default_factory=list)
    train_videos: list[Path] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    num_eval_questions: int = 0
    num_train_samples: int = 0
    codec: str = ""
    skipped: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        """One human-readable paragraph, printed by the CLI."""
        what = "reused (same config)" if self.skipped else f"generated in {self.seconds:.1f}s"
        return (
            f"synthetic data in {self.root}: {what}\n"
            f"  eval : {len(self.eval_videos)} videos, {self.num_eval_questions} questions -> {self.eval_meta.name}\n"
            f"  train: {len(self.train_videos)} videos, {self.num_train_samples} conversations -> "
            f"{self.train_json.name}\n"
            f"  stage-1: {len(self.images)} image-caption pairs -> {self.captions.name}\n"
            f"  codec {self.codec}, {self.config.width}x{self.config.height}, fps {self.config.fps}"
        )


# --------------------------------------------------------------------------------------------------------------
# Drawing


def grid_indices(num_frames: int, n: int) -> np.ndarray:
    """The sampled frames needles are aligned to: the project's uniform sampler taking ``n`` of ``num_frames``."""
    from .video import sample_indices

    return sample_indices(num_frames, 1.0, "uniform", num_frames=n)


def shape_mask(shape: str, height: int, width: int, cy: float, cx: float, size: float) -> np.ndarray:
    """Boolean (height, width) mask of ``shape`` centred at pixel (cy, cx), bounding box ``size`` pixels wide.

    Pixel centres are mapped to ``[-1, 1]^2`` of the shape's box; every shape touches all four sides of that box,
    so a mask's bounding box recovers centre and size (tests use this to match templates).
    """
    half = size / 2.0
    y = (np.arange(height, dtype=np.float64)[:, None] + 0.5 - cy) / half
    x = (np.arange(width, dtype=np.float64)[None, :] + 0.5 - cx) / half
    ay, ax = np.abs(y), np.abs(x)
    if shape == "circle":
        return x**2 + y**2 <= 1.0
    if shape == "square":
        return (ax <= 1.0) & (ay <= 1.0)
    if shape == "triangle":  # apex up, base at the bottom
        return (y <= 1.0) & (ax <= (y + 1.0) / 2.0)
    if shape == "diamond":
        return ax + ay <= 1.0
    if shape == "cross":  # arms one third of the box wide
        return ((ax <= 1 / 3) & (ay <= 1.0)) | ((ay <= 1 / 3) & (ax <= 1.0))
    raise ValueError(f"unknown shape {shape!r}")


def _noise_frame(rng: np.random.Generator, height: int, width: int, config: SyntheticConfig,
                 tint: np.ndarray) -> np.ndarray:
    """Dark grey block noise (``noise_cell`` px blocks), fresh every frame so only the needle is stable/salient."""
    cell = max(1, config.noise_cell)
    ch, cw = -(-height // cell), -(-width // cell)
    grey = config.noise_mean + rng.integers(-config.noise_amplitude, config.noise_amplitude + 1, size=(ch, cw))
    grey = np.repeat(np.repeat(grey, cell, axis=0), cell, axis=1)[:height, :width]
    rgb = grey[:, :, None] + tint[None, None, :]
    return np.clip(rgb, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------------
# Planning a video: needles, then the questions they make answerable


@dataclass
class _Episode:
    kind: int
    slot: int
    start: int  # first frame
    end: int  # one past the last frame
    cy: float
    cx: float


def _slot_bounds(num_frames: int, grid_n: int) -> list[tuple[int, int]]:
    """Frame ranges [start, end) of the ``grid_n/2`` slots, covering the whole video.

    The boundary between slot k and k+1 lies halfway between the last sampled frame of pair k and the first of pair
    k+1, taken over the project's sampler and the two ``linspace`` samplers when they agree on an order, else over
    the project's sampler alone, so slot k holds sampled frames 2k and 2k+1 of the project's sampler (always) and
    of the others where possible.
    """
    project = grid_indices(num_frames, grid_n)
    line = np.linspace(0, num_frames - 1, grid_n)
    samplers = (project, line.astype(np.int64), np.round(line).astype(np.int64))
    cuts = [0]
    for k in range(grid_n // 2 - 1):
        hi, lo = max(int(s[2 * k + 1]) for s in samplers), min(int(s[2 * k + 2]) for s in samplers)
        if hi >= lo:
            hi, lo = int(project[2 * k + 1]), int(project[2 * k + 2])
        cuts.append((hi + lo + 1) // 2)
    cuts.append(num_frames)
    return list(zip(cuts[:-1], cuts[1:]))


def _place(rng: np.random.Generator, counts: list[int], n_slots: int) -> list[tuple[int, int]] | None:
    """(slot, kind) pairs with no kind in two adjacent slots, or None if random tries fail (caller shrinks)."""
    total = sum(counts)
    if total > n_slots:
        return None
    pool = np.repeat(np.arange(len(counts)), counts)
    for _ in range(200):
        slots = np.sort(rng.choice(n_slots, size=total, replace=False))
        kinds = rng.permutation(pool)
        if all(not (slots[i + 1] == slots[i] + 1 and kinds[i + 1] == kinds[i]) for i in range(total - 1)):
            return [(int(s), int(k)) for s, k in zip(slots, kinds)]
    return None


def _timestamp(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60:02d}:{whole % 60:02d}"


def _time_reference(start_frame: int, end_frame: int, fps: float) -> str:
    """LVBench-style "MM:SS-MM:SS" span (start floored, end ceiled to whole seconds, at least one second)."""
    start = int(np.floor(start_frame / fps))
    end = max(int(np.ceil(end_frame / fps)), start + 1)
    return f"{_timestamp(start)}-{_timestamp(end)}"


def _plan_video(rng: np.random.Generator, config: SyntheticConfig, num_frames: int) -> dict[str, Any]:
    """Choose needle kinds, episode counts and slots, render parameters and all questions for one video."""
    grid_n = config.grid_size(num_frames)
    bounds = _slot_bounds(num_frames, grid_n)
    n_slots = len(bounds)
    max_kinds = min(config.max_needles, n_slots)
    # Enough kinds for the requested number of questions (each kind gives one question per non-order task, each
    # pair of kinds one order question); more are drawn at random up to max_needles.
    per_kind = len([t for t in config.tasks if t != "order"])
    needed = 1
    while needed < max_kinds and needed * per_kind + ("order" in config.tasks) * needed * (needed - 1) // 2 < (
            config.questions_per_video):
        needed += 1
    min_kinds = max(needed, 2 if config.tasks == ("order",) else 1)
    n_kinds = int(rng.integers(min(min_kinds, max_kinds), max_kinds + 1))
    colors = [str(c) for c in rng.choice(config.colors, size=n_kinds, replace=False)]
    shapes = [str(s) for s in rng.choice(config.shapes, size=n_kinds, replace=False)]
    if "count" in config.tasks:
        counts = [int(c) for c in rng.integers(1, config.max_count + 1, size=n_kinds)]
    else:
        counts = [1] * n_kinds
    placement = _place(rng, counts, n_slots)
    while placement is None:  # too many episodes for the slots: shrink a random multi-episode kind, else drop a kind
        multi = [i for i, c in enumerate(counts) if c > 1]
        if multi:
            counts[int(rng.choice(multi))] -= 1
        else:
            drop = len(counts) - 1
            del counts[drop], colors[drop], shapes[drop]
        placement = _place(rng, counts, n_slots)

    h, w = config.height, config.width
    size = config.needle_scale * min(h, w)
    room_y = max(0.0, min(config.needle_jitter, 0.5 - size / (2 * h)))
    room_x = max(0.0, min(config.needle_jitter, 0.5 - size / (2 * w)))
    episodes = []
    for slot, kind in placement:
        cy = h / 2 + float(rng.uniform(-room_y, room_y)) * h
        cx = w / 2 + float(rng.uniform(-room_x, room_x)) * w
        episodes.append(_Episode(kind, slot, bounds[slot][0], bounds[slot][1], round(cy, 3), round(cx, 3)))
    kinds = [{"color": c, "shape": s, "count": n} for c, s, n in zip(colors, shapes, counts)]
    questions = _questions(rng, config, kinds, episodes)
    return {"grid_n": grid_n, "size": round(size, 3), "kinds": kinds, "episodes": episodes, "questions": questions}


def _options(rng: np.random.Generator, answer: Any, distractors: Sequence[Any],
             canonical: Sequence[Any] | None = None) -> tuple[list[Any], str]:
    """Answer + 3 distractors, and the answer letter.

    Random order by default (so the answer letter is uniform). With `canonical` (the config's colour or shape
    list, `option_order="fixed"`), options keep that list's order: with exactly four colours/shapes every question
    of a task then shows the same options in the same order, which turns "find the option that names what you
    saw" (hard for a tiny model reading byte tokens) into "name what you saw" — the quickstart's curriculum.
    """
    picked = [distractors[i] for i in rng.choice(len(distractors), size=3, replace=False)]
    options = [answer, *picked]
    if canonical is not None:
        options = sorted(options, key=list(canonical).index)
        return options, LETTERS[options.index(answer)]
    order = rng.permutation(4)
    options = [options[i] for i in order]
    return options, LETTERS[int(np.argmax(order == 0))]


def _questions(rng: np.random.Generator, config: SyntheticConfig, kinds: list[dict[str, Any]],
               episodes: list[_Episode]) -> list[dict[str, Any]]:
    """Every unambiguous question about this video, then a task-balanced random pick of ``questions_per_video``."""
    fps = config.fps
    by_kind: dict[int, list[_Episode]] = {k: [e for e in episodes if e.kind == k] for k in range(len(kinds))}
    first = {k: eps[0].start for k, eps in by_kind.items()}
    pools: dict[str, list[dict[str, Any]]] = {t: [] for t in config.tasks}

    def span(eps: Iterable[_Episode]) -> str:
        eps = list(eps)
        return _time_reference(min(e.start for e in eps), max(e.end for e in eps), fps)

    for k, kind in enumerate(kinds):
        color, shape, eps = kind["color"], kind["shape"], by_kind[k]
        name = f"{color} {shape}"
        if "needle_color" in pools:
            opts, letter = _options(rng, color, [c for c in config.colors if c != color],
                                    config.colors if config.option_order == "fixed" else None)
            pools["needle_color"].append({"task": "needle_color", "target": {"shape": shape},
                                          "stem": f"What color was the {shape} that appeared in the video?",
                                          "options": opts, "answer": letter, "time_reference": span(eps)})
        if "needle_shape" in pools:
            opts, letter = _options(rng, shape, [s for s in config.shapes if s != shape],
                                    config.shapes if config.option_order == "fixed" else None)
            pools["needle_shape"].append({"task": "needle_shape", "target": {"color": color},
                                          "stem": f"What shape was the {color} object that appeared in the video?",
                                          "options": opts, "answer": letter, "time_reference": span(eps)})
        if "count" in pools:
            top = max(4, config.max_count)
            opts, letter = _options(rng, kind["count"], [n for n in range(1, top + 1) if n != kind["count"]])
            pools["count"].append({"task": "count", "target": {"color": color, "shape": shape},
                                   "stem": f"How many times did the {name} appear in the video?",
                                   "options": [str(o) for o in opts], "answer": letter, "time_reference": span(eps)})
    if "order" in pools:
        present = {(kd["color"], kd["shape"]) for kd in kinds}
        absent = [(c, s) for c in config.colors for s in config.shapes if (c, s) not in present]
        for k in sorted(range(len(kinds)), key=first.get):
            later = [j for j in range(len(kinds)) if first[j] > first[k]]
            # One question per (answer, later partner) pair: at least one other option appears later, so the answer
            # is decided by order, not by presence alone.
            for partner in later:
                others = [(kinds[j]["color"], kinds[j]["shape"]) for j in later if j != partner]
                fillers = others + [absent[i] for i in rng.choice(len(absent), size=min(6, len(absent)), replace=False)]
                pick = [fillers[i] for i in rng.choice(len(fillers), size=2, replace=False)]
                answer = (kinds[k]["color"], kinds[k]["shape"])
                opts, letter = _options(rng, answer, [(kinds[partner]["color"], kinds[partner]["shape"]), *pick])
                present_opts = [j for j in range(len(kinds)) if (kinds[j]["color"], kinds[j]["shape"]) in opts]
                ref = _time_reference(first[k], max(by_kind[j][0].end for j in present_opts), fps)
                pools["order"].append({"task": "order", "target": {"options_present": sorted(
                    f"{kinds[j]['color']} {kinds[j]['shape']}" for j in present_opts)},
                    "stem": "Which of these objects appeared first in the video?",
                    "options": [f"{c} {s}" for c, s in opts], "answer": letter, "time_reference": ref})

    # Round-robin over tasks (random task order) so that a small budget still mixes tasks.
    for pool in pools.values():
        perm = rng.permutation(len(pool))
        pool[:] = [pool[i] for i in perm]
    chosen: list[dict[str, Any]] = []
    task_order = [config.tasks[i] for i in rng.permutation(len(config.tasks))]
    while len(chosen) < config.questions_per_video and any(pools.values()):
        for task in task_order:
            if pools[task] and len(chosen) < config.questions_per_video:
                chosen.append(pools[task].pop())
    for q in chosen:
        q["answer_text"] = q["options"][LETTERS.index(q["answer"])]
        q["question"] = q["stem"] + "".join(f"\n({L}) {o}" for L, o in zip(LETTERS, q["options"]))
    return chosen


def prompt_corpus(samples: int = 64) -> list[str]:
    """Every kind of text the synthetic data and its evaluation put in front of a model, for tokenizer merges.

    The tiny tokenizer (`vamba.data.processor.build_tiny_tokenizer(merges=N)`) learns word merges from this, so a
    tiny model reads "What color was the triangle" as ~7 tokens instead of ~30 bytes: the LVBench prompt then fits
    in ~93 tokens instead of ~310 (faster steps, steadier learning: module docstring).
    Deterministic: questions come from ``samples`` planned (not rendered) videos of a fixed all-task config.
    """
    from ..evals.types import VAMBA_HEAD

    config = SyntheticConfig(num_frames=16, max_needles=3, max_count=3, questions_per_video=8)
    texts = [VAMBA_HEAD, *(instruction for instruction, _ in ANSWER_STYLES.values())]
    for index in range(samples):
        plan = _plan_video(np.random.default_rng([config.seed, 7, index]), config, config.num_frames)
        for q in plan["questions"]:
            texts.append(q["question"])
            texts += [template.format(letter=q["answer"], text=q["answer_text"]) for _, template in
                      ANSWER_STYLES.values()]
    for color in PALETTE:
        for shape in SHAPES:
            texts += [t.format(color=color, shape=shape, position=pos) for t in CAPTION_TEMPLATES for pos in POSITIONS]
    return texts


# --------------------------------------------------------------------------------------------------------------
# Writing files (atomically)


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it over ``path`` only if the block succeeds (no half-written files)."""
    tmp = _tmp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_text(path: Path, text: str) -> None:
    with _atomic(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _png_bytes(rgb: np.ndarray) -> bytes:
    """Minimal RGB8 PNG encoder (zlib + CRC), so stage-1 images need no imaging library and are byte-reproducible."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def resolve_codec(codec: str) -> str:
    """``auto`` -> libx264 when the installed PyAV/FFmpeg has it, else mpeg4 (always built into FFmpeg)."""
    if codec != "auto":
        return codec
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _encode_mp4(path: Path, frames: Iterable[np.ndarray], width: int, height: int, fps: float, codec: str,
                keyframe_interval: int, crf: int) -> None:
    """Encode RGB frames to yuv420p mp4, single-threaded and CPU-independent so that runs are reproducible."""
    import av

    rate = Fraction(fps).limit_denominator(1001)
    with _atomic(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            if codec == "libx264":
                # cpu-independent: without it x264's optimised code paths gave different bitstreams (and decoded
                # pixels) for identical input in repeated runs at 56 and 64 px on this machine's CPU.
                params = (f"keyint={keyframe_interval}:min-keyint={keyframe_interval}:scenecut=0:threads=1:"
                          "cpu-independent=1")
                stream = container.add_stream("libx264", rate=rate,
                                              options={"crf": str(crf), "preset": "medium", "x264-params": params})
            else:
                stream = container.add_stream(codec, rate=rate)
                stream.bit_rate = int(width * height * float(rate) * 4)  # ~0.5 byte per pixel: near-lossless
                stream.codec_context.gop_size = keyframe_interval
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.thread_count = 1
            for i, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = i
                frame.time_base = 1 / rate
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))


def _render_video(plan: dict[str, Any], rng: np.random.Generator, config: SyntheticConfig,
                  num_frames: int) -> Iterator[np.ndarray]:
    """Frames of one video: fresh noise each frame, needle episodes pasted over their slots."""
    h, w = config.height, config.width
    tint = rng.integers(-4, 5, size=3)  # a faint per-video cast; stays far below needle saturation
    masks = [shape_mask(plan["kinds"][e.kind]["shape"], h, w, e.cy, e.cx, plan["size"]) for e in plan["episodes"]]
    active: dict[int, int] = {}
    for i, e in enumerate(plan["episodes"]):
        for f in range(e.start, e.end):
            active[f] = i
    for f in range(num_frames):
        frame = _noise_frame(rng, h, w, config, tint)
        if f in active:
            e = plan["episodes"][active[f]]
            frame[masks[active[f]]] = PALETTE[plan["kinds"][e.kind]["color"]]
        yield frame


# --------------------------------------------------------------------------------------------------------------
# Splits


_STREAM = {"train": 1, "eval": 2, "images": 3}


def _split(root: Path, config: SyntheticConfig, split: str, lengths: list[int], codec: str,
           uid_start: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[Path]]:
    """Write one split's videos; return (LVBench rows, ground-truth records, conversations, video paths)."""
    meta, truth, convs, paths = [], [], [], []
    uid = uid_start
    for index, num_frames in enumerate(lengths):
        rng = np.random.default_rng([config.seed, _STREAM[split], index])
        key = f"syn_{split}_{index:05d}"
        rel = f"{VIDEO_DIR}/{key}.mp4"
        plan = _plan_video(rng, config, num_frames)
        path = root / rel
        _encode_mp4(path, _render_video(plan, rng, config, num_frames), config.width, config.height, config.fps,
                    codec, config.keyframe_interval, config.crf)
        paths.append(path)
        qa, gt_questions = [], []
        for j, q in enumerate(plan["questions"]):
            qa.append({"uid": uid, "question": q["question"], "answer": q["answer"],
                       "question_type": [q["task"], LVBENCH_CATEGORY[q["task"]]],
                       "time_reference": q["time_reference"]})
            gt_questions.append({"uid": uid, "task": q["task"], "target": q["target"], "options": q["options"],
                                 "answer": q["answer"], "answer_text": q["answer_text"]})
            style = config.answer_style
            if style == "mixed":
                style = "sentence" if rng.random() < 0.5 else "letter"
            human, template = ANSWER_STYLES[style]
            reply = template.format(letter=q["answer"], text=q["answer_text"])
            convs.append({"id": f"{key}_q{j:02d}", "video": rel, "num_frames": num_frames,
                          "sample_frames": plan["grid_n"], "conversations": [
                              {"from": "human", "value": f"<video>\n{human}\n{q['question']}"},
                              {"from": "gpt", "value": reply}]})
            uid += 1
        meta.append({"key": key, "type": config.video_type,
                     "video_info": {"duration_minutes": round(num_frames / config.fps / 60, 6), "fps": config.fps,
                                    "resolution": {"width": config.width, "height": config.height}},
                     "qa": qa})
        truth.append({"key": key, "video": rel, "num_frames": num_frames, "fps": config.fps,
                      "width": config.width, "height": config.height, "sample_frames": plan["grid_n"],
                      "sample_indices": grid_indices(num_frames, plan["grid_n"]).tolist(),
                      "needle_size": plan["size"],
                      "needles": [{"color": plan["kinds"][e.kind]["color"], "shape": plan["kinds"][e.kind]["shape"],
                                   "rgb": list(PALETTE[plan["kinds"][e.kind]["color"]]), "slot": e.slot,
                                   "start_frame": e.start, "end_frame": e.end, "center": [e.cy, e.cx]}
                                  for e in plan["episodes"]],
                      "questions": gt_questions})
    return meta, truth, convs, paths


def _images(root: Path, config: SyntheticConfig) -> tuple[list[dict[str, Any]], list[Path]]:
    """Stage-1 image-caption pairs: one shape (colour, shape, position) on the video background, described in words."""
    rows, paths = [], []
    h, w = config.height, config.width
    for index in range(config.num_images):
        rng = np.random.default_rng([config.seed, _STREAM["images"], index])
        color = str(rng.choice(config.colors))
        shape = str(rng.choice(config.shapes))
        position = str(rng.choice(list(POSITIONS)))
        fy, fx = POSITIONS[position]
        rgb = _noise_frame(rng, h, w, config, np.zeros(3, dtype=np.int64))
        rgb[shape_mask(shape, h, w, fy * h, fx * w, config.image_scale * min(h, w))] = PALETTE[color]
        rel = f"{IMAGE_DIR}/img_{index:05d}.png"
        path = root / rel
        with _atomic(path) as tmp:
            tmp.write_bytes(_png_bytes(rgb))
        template = CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))]
        rows.append({"image": rel, "caption": template.format(color=color, shape=shape, position=position),
                     "color": color, "shape": shape, "position": position})
        paths.append(path)
    return rows, paths


# --------------------------------------------------------------------------------------------------------------
# Entry points


def _dataset(root: Path, config: SyntheticConfig, codec: str) -> SyntheticDataset:
    """Paths of a run's outputs (counts are filled in by the caller)."""
    return SyntheticDataset(
        root=root, config=config, eval_meta=root / EVAL_META_FILE, train_meta=root / TRAIN_META_FILE,
        train_json=root / TRAIN_JSON, train_jsonl=root / TRAIN_JSONL, captions=root / CAPTIONS_FILE,
        needles_eval=root / "needles_eval.json", needles_train=root / "needles_train.json",
        eval_videos=[root / VIDEO_DIR / f"syn_eval_{i:05d}.mp4" for i in range(config.eval_videos)],
        train_videos=[root / VIDEO_DIR / f"syn_train_{i:05d}.mp4" for i in range(config.train_videos)],
        images=[root / IMAGE_DIR / f"img_{i:05d}.png" for i in range(config.num_images)], codec=codec)


def _load_marker(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def generate(out_dir: str | os.PathLike[str], config: SyntheticConfig | None = None, *,
             force: bool = False) -> SyntheticDataset:
    """Write the synthetic dataset under ``out_dir`` and return what was written.

    If ``out_dir`` already holds a complete run with an equal config (``synthetic_config.json``, written last) and
    all its files, nothing is regenerated (``skipped=True``). Otherwise the marker is removed first (an interrupted
    run never looks complete), files of the previous run that the new one does not produce are deleted, and all
    outputs are rewritten atomically.
    """
    config = config or SyntheticConfig()
    root = Path(out_dir).resolve()
    marker = _load_marker(root)
    wanted = {"format_version": FORMAT_VERSION, "config": config.to_dict()}
    if marker is not None and not force and {k: marker.get(k) for k in wanted} == wanted:
        data = _dataset(root, config, marker.get("codec", ""))
        if all((root / rel).exists() for rel in marker.get("files", [])):
            data.skipped = True
            data.num_eval_questions = marker.get("num_eval_questions", 0)
            data.num_train_samples = marker.get("num_train_samples", 0)
            return data

    started = time.perf_counter()
    codec = resolve_codec(config.codec)
    (root / VIDEO_DIR).mkdir(parents=True, exist_ok=True)
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    (root / CONFIG_FILE).unlink(missing_ok=True)
    data = _dataset(root, config, codec)

    eval_meta, eval_truth, _, _ = _split(root, config, "eval", [config.num_frames] * config.eval_videos, codec, 1)
    n_eval = sum(len(row["qa"]) for row in eval_meta)
    # Train uids continue after eval so that the two meta files never share a uid.
    train_meta, train_truth, convs, _ = _split(root, config, "train", config.train_lengths(), codec, n_eval + 1)
    captions, _ = _images(root, config)

    _write_text(data.eval_meta, _jsonl(eval_meta))
    _write_text(data.train_meta, _jsonl(train_meta))
    _write_text(data.train_json, json.dumps(convs, ensure_ascii=False, indent=1) + "\n")
    _write_text(data.train_jsonl, _jsonl(convs))
    _write_text(data.captions, _jsonl(captions))
    for path, split, truth in ((data.needles_eval, "eval", eval_truth), (data.needles_train, "train", train_truth)):
        _write_text(path, json.dumps({"split": split, "palette": PALETTE, "videos": truth}, indent=1) + "\n")

    files = [p.relative_to(root).as_posix() for p in (
        data.eval_meta, data.train_meta, data.train_json, data.train_jsonl, data.captions, data.needles_eval,
        data.needles_train, *data.eval_videos, *data.train_videos, *data.images)]
    if marker is not None:  # drop what a previous, different run wrote and this one did not
        keep = set(files)
        for rel in marker.get("files", []):
            stale = root / rel
            if rel not in keep and stale.is_file() and stale.resolve().is_relative_to(root):
                stale.unlink()
    data.num_eval_questions = n_eval
    data.num_train_samples = len(convs)
    data.seconds = time.perf_counter() - started
    _write_text(root / CONFIG_FILE, json.dumps({**wanted, "codec": codec, "num_eval_questions": n_eval,
                                                "num_train_samples": len(convs), "files": files}, indent=1) + "\n")
    return data


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _str_list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _size(text: str) -> tuple[int, int]:
    """``56`` or ``WxH``."""
    if "x" in text.lower():
        w, h = text.lower().split("x")
        return int(w), int(h)
    return int(text), int(text)


def build_parser() -> argparse.ArgumentParser:
    """CLI flags map one-to-one onto `SyntheticConfig` fields (defaults come from the dataclass)."""
    d = SyntheticConfig()
    p = argparse.ArgumentParser(prog="python -m vamba.data.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--videos", type=int, help="videos per split (train and eval), unless given separately")
    p.add_argument("--train-videos", type=int, help=f"train videos (default {d.train_videos})")
    p.add_argument("--eval-videos", type=int, help=f"eval videos (default {d.eval_videos})")
    p.add_argument("--questions", type=int, default=d.questions_per_video, help="questions per video")
    p.add_argument("--frames", type=int, default=d.num_frames, help="frames per video")
    p.add_argument("--schedule", type=_int_list, default=d.train_frames_schedule,
                   help="train curriculum: comma-separated frame counts, e.g. 8,16,32,64")
    p.add_argument("--eval-frames", type=int, default=d.eval_frames,
                   help="frames the consumer samples uniformly; needles align to that grid (default: all)")
    p.add_argument("--fps", type=float, default=d.fps)
    p.add_argument("--size", type=_size, default=(d.width, d.height), help="frame size: N or WxH (default 56)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--tasks", type=_str_list, default=d.tasks, help=f"comma list from {','.join(TASKS)}")
    p.add_argument("--max-needles", type=int, default=d.max_needles, help="needle kinds per video (max)")
    p.add_argument("--max-count", type=int, default=d.max_count, help="max appearances of one kind")
    p.add_argument("--codec", default=d.codec, choices=("auto", "libx264", "mpeg4"))
    p.add_argument("--keyint", type=int, default=d.keyframe_interval, help="keyframe interval (frames)")
    p.add_argument("--images", type=int, default=d.num_images, help="stage-1 image-caption pairs")
    p.add_argument("--answer-style", default=d.answer_style, choices=(*ANSWER_STYLES, "mixed"))
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other SyntheticConfig field, VALUE as JSON (e.g. --set needle_scale=0.8); repeatable")
    p.add_argument("--force", action="store_true", help="regenerate even if the same config exists")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m vamba.data.synthetic --out DIR --videos N ...``; prints a summary, returns an exit code."""
    args = build_parser().parse_args(argv)
    d = SyntheticConfig()
    train = args.train_videos if args.train_videos is not None else (args.videos if args.videos is not None
                                                                     else d.train_videos)
    evals = args.eval_videos if args.eval_videos is not None else (args.videos if args.videos is not None
                                                                   else d.eval_videos)
    try:
        extra = {}
        for item in args.set:
            name, _, value = item.partition("=")
            try:
                extra[name] = json.loads(value)
            except ValueError:
                extra[name] = value  # bare strings, e.g. --set video_type=cartoon
        fields = dict(
            train_videos=train, eval_videos=evals, questions_per_video=args.questions, num_frames=args.frames,
            train_frames_schedule=args.schedule, eval_frames=args.eval_frames, fps=args.fps, width=args.size[0],
            height=args.size[1], seed=args.seed, tasks=args.tasks, max_needles=args.max_needles,
            max_count=args.max_count, codec=args.codec, keyframe_interval=args.keyint, num_images=args.images,
            answer_style=args.answer_style)
        config = SyntheticConfig.from_dict({**fields, **extra})
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(generate(args.out, config, force=args.force).summary())
    return 0


__all__ = [
    "PALETTE", "SHAPES", "TASKS", "SyntheticConfig", "SyntheticDataset", "generate", "main", "resolve_codec",
    "grid_indices", "prompt_corpus", "shape_mask",
]

if __name__ == "__main__":
    raise SystemExit(main())
