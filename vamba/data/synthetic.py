"""Synthetic long-video data on disk: real mp4 files, LVBench-style questions, LLaVA conversations, image captions.

Why: every Vamba path (stage-1 captions, stage-2 video conversations, LVBench-style evaluation) must run on a CPU
with no downloads, and a tiny model must be able to *learn* something in minutes (the quickstart). What the videos
show and ask is the needle task (`vamba.data.needles`); design notes and the learnability log:
docs/synthetic_data.md.

Outputs under ``out_dir`` (`generate`): ``videos/<key>.mp4``; ``video_info.meta.jsonl`` (eval split, the LVBench
schema) and ``train_video_info.meta.jsonl``; ``train.json`` / ``train.jsonl`` (LLaVA conversations);
``images/<id>.png`` + ``captions.jsonl`` (stage-1 pairs); ``needles_{eval,train}.json`` (ground truth);
``synthetic_config.json`` (written last: marks a complete run, so an equal config skips the work). Files are
written atomically. The same config gives byte-identical files (encoders run single-threaded).

CLI: ``python -m vamba.data.synthetic out=DIR [field=value ...] [force=true]`` (fields of `SyntheticConfig`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from .mp4 import resolve_codec, write_mp4
from .needles import (
    ANSWER_STYLES,
    CAPTION_TEMPLATES,
    LETTER_INSTRUCTION,
    PALETTE,
    POSITIONS,
    SHAPES,
    TASKS,
    SyntheticConfig,
    grid_indices,
    noise_frame,
    plan_video,
    render_video,
    shape_mask,
)

__all__ = ["LETTER_INSTRUCTION", "PALETTE", "SHAPES", "TASKS", "SyntheticConfig", "SyntheticDataset", "generate",
           "main", "shape_mask"]

FORMAT_VERSION = 2  # bump when the same config would produce different files
CONFIG_FILE = "synthetic_config.json"
TRAIN_JSONL = "train.jsonl"
#: Second label per task, naming the LVBench category it resembles (LVBench questions are multi-label).
LVBENCH_CATEGORY = {"needle_color": "entity recognition", "needle_shape": "entity recognition",
                    "order": "event understanding", "count": "key information retrieval"}


@dataclass
class SyntheticDataset:
    """What `generate` wrote (absolute paths) and how much of it."""

    root: Path
    config: SyntheticConfig
    codec: str = ""
    num_eval_questions: int = 0
    num_train_samples: int = 0
    skipped: bool = False
    seconds: float = 0.0

    def __post_init__(self) -> None:
        r, c = self.root, self.config
        self.eval_meta, self.train_meta = r / "video_info.meta.jsonl", r / "train_video_info.meta.jsonl"
        self.train_json, self.train_jsonl, self.captions = r / "train.json", r / TRAIN_JSONL, r / "captions.jsonl"
        self.needles_eval, self.needles_train = r / "needles_eval.json", r / "needles_train.json"
        self.eval_videos = [r / "videos" / f"syn_eval_{i:05d}.mp4" for i in range(c.eval_videos)]
        self.train_videos = [r / "videos" / f"syn_train_{i:05d}.mp4" for i in range(c.train_videos)]
        self.images = [r / "images" / f"img_{i:05d}.png" for i in range(c.num_images)]

    def files(self) -> list[str]:
        """Every output but the marker, relative to the root."""
        paths = (self.eval_meta, self.train_meta, self.train_json, self.train_jsonl, self.captions, self.needles_eval,
                 self.needles_train, *self.eval_videos, *self.train_videos, *self.images)
        return [p.relative_to(self.root).as_posix() for p in paths]

    def summary(self) -> str:
        """One human-readable paragraph, printed by the CLI."""
        what = "reused (same config)" if self.skipped else f"generated in {self.seconds:.1f}s"
        return (f"synthetic data in {self.root}: {what}\n"
                f"  eval : {len(self.eval_videos)} videos, {self.num_eval_questions} questions -> "
                f"{self.eval_meta.name}\n  train: {len(self.train_videos)} videos, {self.num_train_samples} "
                f"conversations -> {self.train_json.name}\n  stage-1: {len(self.images)} image-caption pairs -> "
                f"{self.captions.name}\n  codec {self.codec}, {self.config.width}x{self.config.height}, "
                f"fps {self.config.fps}")


# -- writing ----------
def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


_STREAM = {"train": 1, "eval": 2, "images": 3}


def _conversation(rng: np.random.Generator, config: SyntheticConfig, q: dict[str, Any]) -> list[dict[str, str]]:
    style = config.answer_style
    if style == "mixed":
        style = "sentence" if rng.random() < 0.5 else "letter"
    human, reply = ANSWER_STYLES[style]
    return [{"from": "human", "value": f"<video>\n{human}\n{q['question']}"},
            {"from": "gpt", "value": reply.format(letter=q["answer"], text=q["answer_text"])}]


def _split(root: Path, config: SyntheticConfig, split: str, lengths: list[int], codec: str, uid: int):
    """Write one split's videos; return (LVBench rows, ground-truth records, conversations)."""
    meta, truth, convs = [], [], []
    for index, num_frames in enumerate(lengths):
        rng = np.random.default_rng([config.seed, _STREAM[split], index])
        key = f"syn_{split}_{index:05d}"
        rel = f"videos/{key}.mp4"
        plan = plan_video(rng, config, num_frames)
        write_mp4(root / rel, render_video(plan, rng, config, num_frames), config.fps, codec=codec,
                  gop=config.keyframe_interval, crf=config.crf)
        qa, gt = [], []
        for j, q in enumerate(plan["questions"]):
            qa.append({"uid": uid, "question": q["question"], "answer": q["answer"], "question_type": [
                q["task"], LVBENCH_CATEGORY[q["task"]]], "time_reference": q["time_reference"]})
            gt.append({"uid": uid, **{k: q[k] for k in ("task", "target", "options", "answer", "answer_text")}})
            convs.append({"id": f"{key}_q{j:02d}", "video": rel, "num_frames": num_frames,
                          "sample_frames": plan["grid_n"], "conversations": _conversation(rng, config, q)})
            uid += 1
        size = {"width": config.width, "height": config.height}
        meta.append({"key": key, "type": config.video_type, "video_info": {
            "duration_minutes": round(num_frames / config.fps / 60, 6), "fps": config.fps, "resolution": size},
            "qa": qa})
        needles = [{"color": plan["kinds"][e.kind]["color"], "shape": plan["kinds"][e.kind]["shape"],
                    "rgb": list(PALETTE[plan["kinds"][e.kind]["color"]]), "slot": e.slot, "start_frame": e.start,
                    "end_frame": e.end, "center": [e.cy, e.cx]} for e in plan["episodes"]]
        truth.append({"key": key, "video": rel, "num_frames": num_frames, "fps": config.fps, **size,
                      "sample_frames": plan["grid_n"],
                      "sample_indices": grid_indices(num_frames, plan["grid_n"]).tolist(),
                      "needle_size": plan["size"], "needles": needles, "questions": gt})
    return meta, truth, convs


def _images(data: SyntheticDataset) -> list[dict[str, Any]]:
    """Stage-1 image-caption pairs: one shape (colour, shape, position) on the video background, described in words."""
    from PIL import Image

    config, rows = data.config, []
    h, w = config.height, config.width
    for index, path in enumerate(data.images):
        rng = np.random.default_rng([config.seed, _STREAM["images"], index])
        color, shape = str(rng.choice(config.colors)), str(rng.choice(config.shapes))
        position = str(rng.choice(list(POSITIONS)))
        fy, fx = POSITIONS[position]
        rgb = noise_frame(rng, config, np.zeros(3, dtype=np.int64))
        rgb[shape_mask(shape, h, w, fy * h, fx * w, config.image_scale * min(h, w))] = PALETTE[color]
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        Image.fromarray(rgb).save(tmp, format="PNG")
        os.replace(tmp, path)
        template = CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))]
        rows.append({"image": path.relative_to(data.root).as_posix(), "caption": template.format(
            color=color, shape=shape, position=position), "color": color, "shape": shape, "position": position})
    return rows


# -- entry points ----------
def generate(out_dir: str | os.PathLike[str], config: SyntheticConfig | None = None, *,
             force: bool = False) -> SyntheticDataset:
    """Write the synthetic dataset under ``out_dir`` and return what was written.

    If ``out_dir`` already holds a complete run of an equal config (marker written last, every file present),
    nothing is regenerated (``skipped=True``). Otherwise the marker is removed first (an interrupted run never looks
    complete), everything is rewritten atomically, and files of the previous run that this one does not produce
    are deleted.
    """
    config = config or SyntheticConfig()
    root = Path(out_dir).resolve()
    try:
        marker = json.loads((root / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        marker = None
    wanted = {"format_version": FORMAT_VERSION, "config": config.to_dict()}
    if marker is not None and not force and {k: marker.get(k) for k in wanted} == wanted:
        if all((root / rel).exists() for rel in marker.get("files", [])):
            return SyntheticDataset(root, config, marker.get("codec", ""), marker.get("num_eval_questions", 0),
                                    marker.get("num_train_samples", 0), skipped=True)
    started = time.perf_counter()
    data = SyntheticDataset(root, config, resolve_codec(config.codec))
    for sub in ("videos", "images"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / CONFIG_FILE).unlink(missing_ok=True)
    eval_meta, eval_truth, _ = _split(root, config, "eval", [config.num_frames] * config.eval_videos, data.codec, 1)
    data.num_eval_questions = sum(len(row["qa"]) for row in eval_meta)
    # Train uids continue after eval so that the two meta files never share a uid.
    train_meta, train_truth, convs = _split(root, config, "train", config.train_lengths(), data.codec,
                                            data.num_eval_questions + 1)
    data.num_train_samples = len(convs)
    _write_text(data.captions, _jsonl(_images(data)))
    _write_text(data.eval_meta, _jsonl(eval_meta))
    _write_text(data.train_meta, _jsonl(train_meta))
    _write_text(data.train_json, json.dumps(convs, ensure_ascii=False, indent=1) + "\n")
    _write_text(data.train_jsonl, _jsonl(convs))
    for path, split, truth in ((data.needles_eval, "eval", eval_truth), (data.needles_train, "train", train_truth)):
        _write_text(path, json.dumps({"split": split, "palette": PALETTE, "videos": truth}, indent=1) + "\n")
    files = data.files()
    for rel in set((marker or {}).get("files", [])) - set(files):  # what a previous, different run wrote
        stale = root / rel
        if stale.is_file() and stale.resolve().is_relative_to(root):
            stale.unlink()
    data.seconds = time.perf_counter() - started
    _write_text(root / CONFIG_FILE, json.dumps({**wanted, "codec": data.codec, "num_eval_questions":
                                                data.num_eval_questions, "num_train_samples": data.num_train_samples,
                                                "files": files}, indent=1) + "\n")
    return data


@dataclass(frozen=True)
class GenerateConfig(SyntheticConfig):
    """The CLI's Hydra structured config: every `SyntheticConfig` field, where to write, and whether to redo."""

    out: str = MISSING
    force: bool = False


def _register() -> None:
    node = OmegaConf.structured(GenerateConfig)
    OmegaConf.set_readonly(node, False)  # a frozen dataclass makes a read-only node; overrides must merge into it
    ConfigStore.instance().store(name="synthetic_generate", node=node)


_register()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vamba.data.synthetic out=DIR [field=value ...]``; prints a summary, returns an exit code."""
    from hydra import compose, initialize
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize(version_base="1.3", config_path=None):
            cfg = OmegaConf.to_object(compose("synthetic_generate", list(sys.argv[1:] if argv is None else argv)))
        config = SyntheticConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(SyntheticConfig)})
    except (ValueError, TypeError, HydraException, OmegaConfBaseException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(generate(cfg.out, config, force=cfg.force).summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
