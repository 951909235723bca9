"""The synthetic needle task: what a video shows, where its needles sit, and which questions they answer.

Every frame is dark grey noise, fresh every frame; a *needle* is a bright shape (colour from `PALETTE`, shape from
`SHAPES`) filling one *slot*: the frames between two pairs of the consumer's sampling grid, so a sampled needle
fills one whole 2-frame temporal patch of Qwen2-VL's vision tower (`_slot_bounds`). Within a video every needle
*kind* has its own colour and its own shape; a kind may appear several times. Questions (4 options, chance 25%):
``needle_color`` / ``needle_shape`` (of a kind named by the other attribute), ``order`` (which kind appeared
first) and ``count`` (how often a kind appeared). `vamba.data.synthetic` writes the files; design notes and the
learnability log: docs/synthetic_data.md.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .prompts import RESPOND_ABCD, VAMBA_HEAD
from .video import sample_indices

LETTERS = ("A", "B", "C", "D")

#: Bright saturated colours, far apart in RGB so that yuv420p compression cannot confuse them.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25), "orange": (255, 140, 0), "yellow": (245, 230, 20), "green": (30, 200, 50),
    "cyan": (0, 210, 230), "blue": (30, 70, 255), "purple": (180, 40, 230),
}
#: Shapes, each filling the square [-1, 1]^2 of its own frame of reference (so its bounding box gives centre + size).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond")
TASKS: tuple[str, ...] = ("needle_color", "needle_shape", "order", "count")
#: Image positions used in captions: name -> (row, column) of the shape's centre as fractions of the image.
POSITIONS: dict[str, tuple[float, float]] = {"center": (0.5, 0.5), "top left": (0.28, 0.28),
                                             "top right": (0.28, 0.72), "bottom left": (0.72, 0.28),
                                             "bottom right": (0.72, 0.72)}
#: Vamba's LVBench prompt, so that training conversations look like what evaluation asks.
LETTER_INSTRUCTION = f"{VAMBA_HEAD}\n{RESPOND_ABCD}"
#: Training reply forms: (instruction, reply template over the answer letter and option text).
ANSWER_STYLES: dict[str, tuple[str, str]] = {
    "letter": (LETTER_INSTRUCTION, "{letter}"),
    "sentence": (f"{VAMBA_HEAD}\nAnswer with one short sentence that names the letter of the correct option.",
                 "The answer is ({letter}) {text}."),
    "text": (f"{VAMBA_HEAD}\nRespond with only the text of the correct option.", "{text}"),
}
CAPTION_TEMPLATES = ("A {color} {shape} in the {position} of the image.",
                     "A {color} {shape} on a dark noisy background, at the {position}.",
                     "The image shows a {color} {shape} in the {position}.")


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines the generated data (stored as ``synthetic_config.json``; equal config = skip).

    Sizes: ``width``/``height`` in 28..640, even (yuv420p); multiples of 28 avoid resizing in Qwen2-VL.
    ``eval_frames``: frames the consumer samples uniformly (None = all ``num_frames``); needles are laid on that
    grid. ``train_frames_schedule``: if given, train videos are split into equal consecutive blocks of these
    lengths (a curriculum). ``option_order="fixed"``: colour/shape options in the config's list order.
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
    answer_style: str = "letter"  # letter | sentence | text | mixed (sentence or letter at random)
    option_order: str = "random"
    video_type: str = "synthetic"

    def __post_init__(self) -> None:
        # Lists (JSON, Hydra) become tuples and ints floats, so a config compares equal after a round trip.
        for name in ("train_frames_schedule", "tasks", "colors", "shapes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("fps", "needle_scale", "needle_jitter", "image_scale"):
            object.__setattr__(self, name, float(getattr(self, name)))
        lengths = [self.num_frames, *self.train_frames_schedule]
        only_order = self.tasks == ("order",)
        checks = [
            (min(self.train_videos, self.eval_videos, self.num_images) >= 0, "video and image counts must be >= 0"),
            (self.questions_per_video >= 1, "questions_per_video must be >= 1"),
            (all(28 <= s <= 640 and s % 2 == 0 for s in (self.width, self.height)),
             f"frame sizes must be even and in 28..640, got {self.width}x{self.height}"),
            (self.option_order in ("random", "fixed"), f"option_order must be random or fixed: {self.option_order}"),
            (bool(self.tasks) and set(self.tasks) <= set(TASKS), f"tasks: a non-empty subset of {TASKS}"),
            (set(self.colors) <= set(PALETTE) and len(set(self.colors)) == len(self.colors) >= 4,
             f"colors: at least 4 distinct names from {tuple(PALETTE)}"),
            (set(self.shapes) <= set(SHAPES) and len(set(self.shapes)) == len(self.shapes) >= 4,
             f"shapes: at least 4 distinct names from {SHAPES}"),
            (1 <= self.max_needles <= min(len(self.colors), len(self.shapes)),
             "max_needles must be in 1..min(len(colors), len(shapes)) (kinds differ in both)"),
            (self.max_count >= 1 and self.fps > 0 and self.keyframe_interval >= 1,
             "max_count and keyframe_interval must be >= 1, fps > 0"),
            (not only_order or self.max_needles >= 2, "the order task needs max_needles >= 2"),
            (self.codec in ("auto", "libx264", "mpeg4"), "codec must be auto, libx264 or mpeg4"),
            (self.answer_style in (*ANSWER_STYLES, "mixed"), f"answer_style: one of {(*ANSWER_STYLES, 'mixed')}"),
            (0.1 <= self.needle_scale <= 1.0 and 0.1 <= self.image_scale <= 0.5,
             "needle_scale must be in [0.1, 1], image_scale in [0.1, 0.5]"),
            (self.eval_frames is None or (self.eval_frames >= 2 and self.eval_frames % 2 == 0),
             "eval_frames must be even and >= 2 (frames are paired into temporal patches)"),
            (all(n >= 2 and self.grid_size(n) >= 2 for n in lengths), "every video needs >= 2 sampled frames"),
            (not only_order or min(self.grid_size(n) for n in lengths) >= 4,
             "the order task needs at least 4 sampled frames (2 slots)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

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


# -- drawing ----------
def grid_indices(num_frames: int, n: int) -> np.ndarray:
    """The sampled frames needles are aligned to: the project's uniform sampler taking ``n`` of ``num_frames``."""
    return sample_indices(num_frames, 1.0, "uniform", num_frames=n)


def shape_mask(shape: str, height: int, width: int, cy: float, cx: float, size: float) -> np.ndarray:
    """Boolean (height, width) mask of ``shape`` centred at pixel (cy, cx), bounding box ``size`` pixels wide.

    Every shape touches all four sides of its box, so a mask's bounding box recovers centre and size (tests match
    templates that way).
    """
    half = size / 2.0
    y = (np.arange(height, dtype=np.float64)[:, None] + 0.5 - cy) / half
    x = (np.arange(width, dtype=np.float64)[None, :] + 0.5 - cx) / half
    ay, ax = np.abs(y), np.abs(x)
    masks = {
        "circle": lambda: x**2 + y**2 <= 1.0,
        "square": lambda: (ax <= 1.0) & (ay <= 1.0),
        "triangle": lambda: (y <= 1.0) & (ax <= (y + 1.0) / 2.0),  # apex up
        "diamond": lambda: ax + ay <= 1.0,
        "cross": lambda: ((ax <= 1 / 3) & (ay <= 1.0)) | ((ay <= 1 / 3) & (ax <= 1.0)),  # arms a third wide
    }
    if shape not in masks:
        raise ValueError(f"unknown shape {shape!r}")
    return masks[shape]()


def noise_frame(rng: np.random.Generator, config: SyntheticConfig, tint: np.ndarray) -> np.ndarray:
    """Dark grey block noise (``noise_cell`` px blocks), fresh every frame so only the needle is stable/salient."""
    h, w, cell = config.height, config.width, max(1, config.noise_cell)
    amp = config.noise_amplitude
    grey = config.noise_mean + rng.integers(-amp, amp + 1, size=(-(-h // cell), -(-w // cell)))
    grey = np.repeat(np.repeat(grey, cell, axis=0), cell, axis=1)[:h, :w]
    return np.clip(grey[:, :, None] + tint[None, None, :], 0, 255).astype(np.uint8)


# -- planning a video: needles, then the questions they make answerable ----------
@dataclass
class _Episode:
    kind: int
    slot: int
    start: int  # first frame
    end: int  # one past the last frame
    cy: float
    cx: float


def _slot_bounds(num_frames: int, grid_n: int) -> list[tuple[int, int]]:
    """Frame ranges [start, end) of the ``grid_n/2`` slots, covering the whole video: slot k holds sampled frames
    2k and 2k+1 of the project's sampler, and of both ``linspace`` samplers where they agree on an order."""
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


def _time_reference(start_frame: int, end_frame: int, fps: float) -> str:
    """LVBench-style "MM:SS-MM:SS" span (start floored, end ceiled to whole seconds, at least one second)."""
    start = int(np.floor(start_frame / fps))
    end = max(int(np.ceil(end_frame / fps)), start + 1)
    return "-".join(f"{s // 60:02d}:{s % 60:02d}" for s in (start, end))


def _kinds(rng: np.random.Generator, config: SyntheticConfig, n_slots: int):
    """Needle kinds (colour, shape, episode count) and their slots for one video."""
    max_kinds = min(config.max_needles, n_slots)
    # Enough kinds for the requested number of questions (each kind gives one question per non-order task, each
    # pair of kinds one order question); more are drawn at random up to max_needles.
    per_kind, order = len([t for t in config.tasks if t != "order"]), "order" in config.tasks
    needed = 1
    while needed < max_kinds and needed * per_kind + order * needed * (needed - 1) // 2 < config.questions_per_video:
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
            del counts[-1], colors[-1], shapes[-1]
        placement = _place(rng, counts, n_slots)
    return [{"color": c, "shape": s, "count": n} for c, s, n in zip(colors, shapes, counts)], placement


def plan_video(rng: np.random.Generator, config: SyntheticConfig, num_frames: int) -> dict[str, Any]:
    """Choose needle kinds, episode counts and slots, render parameters and all questions for one video."""
    grid_n = config.grid_size(num_frames)
    bounds = _slot_bounds(num_frames, grid_n)
    kinds, placement = _kinds(rng, config, len(bounds))
    h, w = config.height, config.width
    size = config.needle_scale * min(h, w)
    room_y = max(0.0, min(config.needle_jitter, 0.5 - size / (2 * h)))
    room_x = max(0.0, min(config.needle_jitter, 0.5 - size / (2 * w)))
    episodes = []
    for slot, kind in placement:
        cy = h / 2 + float(rng.uniform(-room_y, room_y)) * h
        cx = w / 2 + float(rng.uniform(-room_x, room_x)) * w
        episodes.append(_Episode(kind, slot, bounds[slot][0], bounds[slot][1], round(cy, 3), round(cx, 3)))
    questions = _questions(rng, config, kinds, episodes)
    return {"grid_n": grid_n, "size": round(size, 3), "kinds": kinds, "episodes": episodes, "questions": questions}


def _options(rng: np.random.Generator, answer: Any, distractors: Sequence[Any],
             canonical: Sequence[Any] | None = None) -> tuple[list[Any], str]:
    """Answer + 3 distractors, and the answer letter: in random order, or in `canonical`'s order (the config's
    colour/shape list with ``option_order="fixed"``: then the letter names the colour, which a tiny model learns)."""
    options = [answer, *[distractors[i] for i in rng.choice(len(distractors), size=3, replace=False)]]
    if canonical is not None:
        options = sorted(options, key=list(canonical).index)
        return options, LETTERS[options.index(answer)]
    order = rng.permutation(4)
    return [options[i] for i in order], LETTERS[int(np.argmax(order == 0))]


def _order_questions(rng, config, kinds, by_kind) -> list[dict[str, Any]]:
    """"Which appeared first?": one question per (answer, later partner) pair, so that at least one other option
    appears later and the answer is decided by order, not by presence alone."""
    first = {k: eps[0].start for k, eps in by_kind.items()}
    present = {(kd["color"], kd["shape"]) for kd in kinds}
    absent = [(c, s) for c in config.colors for s in config.shapes if (c, s) not in present]
    pool = []
    for k in sorted(range(len(kinds)), key=first.get):
        later = [j for j in range(len(kinds)) if first[j] > first[k]]
        for partner in later:
            others = [(kinds[j]["color"], kinds[j]["shape"]) for j in later if j != partner]
            fillers = others + [absent[i] for i in rng.choice(len(absent), size=min(6, len(absent)), replace=False)]
            pick = [fillers[i] for i in rng.choice(len(fillers), size=2, replace=False)]
            answer = (kinds[k]["color"], kinds[k]["shape"])
            opts, letter = _options(rng, answer, [(kinds[partner]["color"], kinds[partner]["shape"]), *pick])
            shown = [j for j in range(len(kinds)) if (kinds[j]["color"], kinds[j]["shape"]) in opts]
            pool.append({"task": "order", "target": {"options_present": sorted(
                f"{kinds[j]['color']} {kinds[j]['shape']}" for j in shown)},
                "stem": "Which of these objects appeared first in the video?", "options": [f"{c} {s}" for c, s in opts],
                "answer": letter, "time_reference": _time_reference(first[k], max(by_kind[j][0].end for j in shown),
                                                                    config.fps)})
    return pool


def _questions(rng: np.random.Generator, config: SyntheticConfig, kinds: list[dict[str, Any]],
               episodes: list[_Episode]) -> list[dict[str, Any]]:
    """Every unambiguous question about this video, then a task-balanced random pick of ``questions_per_video``."""
    by_kind = {k: [e for e in episodes if e.kind == k] for k in range(len(kinds))}
    pools: dict[str, list[dict[str, Any]]] = {t: [] for t in config.tasks}
    fixed = config.option_order == "fixed"
    for k, kind in enumerate(kinds):
        color, shape = kind["color"], kind["shape"]
        span = _time_reference(min(e.start for e in by_kind[k]), max(e.end for e in by_kind[k]), config.fps)
        asks = {  # task -> (target, stem, answer, distractors, canonical order)
            "needle_color": ({"shape": shape}, f"What color was the {shape} that appeared in the video?", color,
                             [c for c in config.colors if c != color], config.colors if fixed else None),
            "needle_shape": ({"color": color}, f"What shape was the {color} object that appeared in the video?",
                             shape, [s for s in config.shapes if s != shape], config.shapes if fixed else None),
            "count": ({"color": color, "shape": shape}, f"How many times did the {color} {shape} appear in the video?",
                      kind["count"], [n for n in range(1, max(4, config.max_count) + 1) if n != kind["count"]], None),
        }
        for task, (target, stem, answer, distractors, canonical) in asks.items():
            if task in pools:
                opts, letter = _options(rng, answer, distractors, canonical)
                pools[task].append({"task": task, "target": target, "stem": stem, "options": [str(o) for o in opts],
                                    "answer": letter, "time_reference": span})
    if "order" in pools:
        pools["order"] = _order_questions(rng, config, kinds, by_kind)
    for pool in pools.values():  # round-robin over tasks (random task order): a small budget still mixes tasks
        pool[:] = [pool[i] for i in rng.permutation(len(pool))]
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
    """Every kind of text the synthetic data and its evaluation put in front of a model, for the tiny tokenizer's
    BPE merges (`vamba.data.processor.build_tiny_tokenizer`). Deterministic: questions come from ``samples``
    planned (not rendered) videos of a fixed all-task config."""
    config = SyntheticConfig(num_frames=16, max_needles=3, max_count=3, questions_per_video=8)
    texts = [VAMBA_HEAD, *(instruction for instruction, _ in ANSWER_STYLES.values())]
    for index in range(samples):
        for q in plan_video(np.random.default_rng([config.seed, 7, index]), config, config.num_frames)["questions"]:
            texts.append(q["question"])
            texts += [reply.format(letter=q["answer"], text=q["answer_text"]) for _, reply in ANSWER_STYLES.values()]
    for color in PALETTE:
        for shape in SHAPES:
            texts += [t.format(color=color, shape=shape, position=pos) for t in CAPTION_TEMPLATES for pos in POSITIONS]
    return texts


def render_video(plan: dict[str, Any], rng: np.random.Generator, config: SyntheticConfig,
                 num_frames: int) -> Iterator[np.ndarray]:
    """Frames of one video: fresh noise each frame, needle episodes pasted over their slots."""
    tint = rng.integers(-4, 5, size=3)  # a faint per-video cast; stays far below needle saturation
    kinds, episodes = plan["kinds"], plan["episodes"]
    masks = [shape_mask(kinds[e.kind]["shape"], config.height, config.width, e.cy, e.cx, plan["size"])
             for e in episodes]
    active = {f: i for i, e in enumerate(episodes) for f in range(e.start, e.end)}
    for f in range(num_frames):
        frame = noise_frame(rng, config, tint)
        if f in active:
            frame[masks[active[f]]] = PALETTE[kinds[episodes[active[f]].kind]["color"]]
        yield frame
