"""Training samples: annotation record -> chat messages -> processed model inputs, skipping bad samples.

A long run must never die on one bad file: unreadable media, a conversation with nothing to train on, or text
over the token budget make `SampleBuilder` raise `SampleError`; `VambaDataset` catches it, counts it by reason,
logs the path and reason, appends it to an optional JSONL skip log, and serves the next good sample instead.

Placeholders attach by kind: in a record whose media are all of one kind, `<image>` and `<video>` tags take the
media in order whatever the tag says (LLaVA-Video-178K writes `<image>` for its videos, the LLaVA-NeXT
convention); in a record mixing images and videos, `<image>` takes the next image and `<video>` the next video.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..modeling.errors import UsageError
from .annotations import AnnotationError, check_llava
from .frames import FrameSpec
from .processor import IGNORE_INDEX, Message, VambaProcessor
from .prompts import CAPTION_PROMPT, RELEASE_CAPTION_PROMPTS

logger = logging.getLogger(__name__)

SPEAKERS = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
CAPTION_PROMPTS = ("fixed", "release")
_PLACEHOLDER = re.compile(r"<(image|video)>")


class SampleError(Exception):
    """A training sample that cannot be used; `reason` is a short category for counting."""

    def __init__(self, where: str, reason: str, detail: str = ""):
        super().__init__(f"{where}: {reason}{': ' + detail if detail else ''}")
        self.where, self.reason, self.detail = where, reason, detail


def _media(record: dict[str, Any]) -> list[tuple[str, Any]]:
    """(kind, reference) of a record's media: a path, or a `{bytes, path}` dict (parquet, webdataset)."""
    media = []
    for kind in ("image", "video"):
        value = record.get(kind)
        for ref in value if isinstance(value, list) else [value]:
            if ref and (not isinstance(ref, dict) or ref.get("bytes") or ref.get("path")):
                media.append((kind, ref))
    return media


def _assign(tags: list[str], media: list[tuple[str, Any]], where: str) -> list[int]:
    """Index into `media` of each placeholder tag, in order (module docstring)."""
    if len(tags) > len(media):
        raise SampleError(where, "more tags than media", f"{len(tags)} placeholders, {len(media)} media")
    if len({kind for kind, _ in media}) <= 1:
        return list(range(len(tags)))
    queues = {k: [i for i, (kind, _) in enumerate(media) if kind == k] for k in ("image", "video")}
    out = []
    for n, tag in enumerate(tags):
        if not queues[tag]:
            raise SampleError(where, "ambiguous placeholder",
                              f"tag {n + 1} is <{tag}> but no {tag} is left among mixed images and videos")
        out.append(queues[tag].pop(0))
    return out


def llava_to_messages(record: dict[str, Any]) -> tuple[list[Message], list[tuple[str, Any]]]:
    """LLaVA conversation -> chat messages with `{"type": "image"|"video", <kind>: reference}` items.

    Placeholders mark where media goes (module docstring); media without a placeholder is put before the first
    human turn's text (LLaVA's convention). Returns the messages and the (kind, reference) list in order.
    """
    where = record.get("_where", "?")
    try:
        check_llava(record, where)
    except AnnotationError as e:
        raise SampleError(where, "bad conversation", str(e)) from None
    media = _media(record)
    tags = [m.group(1) for t in record["conversations"] if SPEAKERS[t["from"]] == "user"
            for m in _PLACEHOLDER.finditer(str(t["value"]))]
    slots = iter(_assign(tags, media, where))
    placed: set[int] = set()
    messages: list[Message] = []
    for turn in record["conversations"]:
        role, text = SPEAKERS[turn["from"]], str(turn["value"])
        if role != "user":
            messages.append({"role": role, "content": text})
            continue
        content: list[dict[str, Any]] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(text):
            if text[pos : m.start()].strip():
                content.append({"type": "text", "text": text[pos : m.start()].strip("\n")})
            i = next(slots)
            placed.add(i)
            kind, ref = media[i]
            content.append({"type": kind, kind: ref})
            pos = m.end()
        if text[pos:].strip():
            content.append({"type": "text", "text": text[pos:].lstrip("\n")})
        messages.append({"role": "user", "content": content})
    rest = [(k, ref) for i, (k, ref) in enumerate(media) if i not in placed]
    if rest:
        first_user = next((m for m in messages if m["role"] == "user"), None)
        if first_user is None:
            raise SampleError(where, "media but no human turn")
        first_user["content"] = [{"type": k, k: ref} for k, ref in rest] + first_user["content"]
    return messages, media


def sample_kind(messages: Sequence[Message]) -> str:
    """The kind of a sample: `video` if a message carries a video, else `image` if one carries an image, else `text`."""
    kinds = {item["type"] for m in messages if isinstance(m["content"], list) for item in m["content"]}
    return "video" if "video" in kinds else "image" if "image" in kinds else "text"


class SampleBuilder:
    """Record of one annotation format -> processed sample (`VambaProcessor` output), or `SampleError`.

    Relative media paths resolve against `root`, else against the annotation file's folder. Caption samples ask
    `CAPTION_PROMPT` (`caption_prompt="fixed"`) or one of the release's 20 prompts drawn per sample from `seed`
    and the sample's mixture position (`"release"`), so a run and its resumption ask the same questions.
    """

    def __init__(self, processor: VambaProcessor, fmt: str, root: str | Path | None = None,
                 frames: FrameSpec | None = None, max_text_tokens: int | None = None,
                 caption_prompt: str = "fixed", seed: int = 0):
        if caption_prompt not in CAPTION_PROMPTS:
            raise UsageError(f"caption_prompt must be one of {CAPTION_PROMPTS}, got {caption_prompt!r}")
        self.processor = processor
        self.fmt = fmt
        self.root = Path(root) if root is not None else None
        self.frames = frames or FrameSpec()
        self.max_text_tokens = max_text_tokens
        self.caption_prompt, self.seed = caption_prompt, seed

    def _path(self, rel: str, record: dict[str, Any]) -> Path:
        p = Path(rel)
        if p.is_absolute():
            return p
        root = self.root if self.root is not None else record.get("_root")
        return p if root is None else Path(root) / p

    def _load(self, kind: str, ref: Any, record: dict[str, Any]) -> np.ndarray:
        where = record.get("_where", "?")
        embedded = ref.get("bytes") if isinstance(ref, dict) else None
        path = None if embedded else self._path(ref["path"] if isinstance(ref, dict) else str(ref), record)
        if embedded and kind == "video":
            raise SampleError(where, "unreadable video", "videos embedded in annotation files are not supported")
        from .video import VideoReadError, load_video, read_image

        # Unset pixel bounds take the processor's, so frames are resized once, to what the model will see.
        vision = self.processor.vision
        try:
            if kind == "image":
                return read_image(embedded or path)
            return load_video(path, self.frames.fill(min_pixels=vision.min_pixels, max_pixels=vision.max_pixels)).frames
        except VideoReadError as e:
            raise SampleError(where, f"unreadable {kind}", str(e)) from None

    def _prompt(self, record: dict[str, Any]) -> str:
        if self.caption_prompt == "fixed":
            return CAPTION_PROMPT
        draw = random.Random(f"{self.seed}:{record.get('_index', record.get('_where'))}")
        return draw.choice(RELEASE_CAPTION_PROMPTS)

    def plan(self, record: dict[str, Any]) -> list[Message]:
        """Chat messages with media as references (paths or embedded bytes), nothing decoded."""
        where = record.get("_where", "?")
        if self.fmt == "llava":
            messages, _ = llava_to_messages(record)
        else:  # caption / webdataset
            if not str(record.get("caption") or "").strip():
                raise SampleError(where, "empty caption")
            if not _media(record):
                raise SampleError(where, "missing media", "caption record without an image")
            question = [{"type": "image", "image": record["image"]}, {"type": "text", "text": self._prompt(record)}]
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": record["caption"]}]
        if not any(m["role"] == "assistant" and str(m["content"]).strip() for m in messages):
            raise SampleError(where, "empty conversation", "no assistant turn to train on")
        return messages

    def messages(self, record: dict[str, Any]) -> list[Message]:
        """Chat messages with media loaded as arrays."""
        messages = self.plan(record)
        for msg in messages:
            if isinstance(msg["content"], list):
                for item in msg["content"]:
                    kind = item["type"]
                    if kind in ("image", "video") and isinstance(item[kind], (str, Path, dict)):
                        item[kind] = self._load(kind, item[kind], record)
        return messages

    def __call__(self, record: dict[str, Any]) -> dict[str, torch.Tensor]:
        where = record.get("_where", "?")
        messages = self.messages(record)
        try:
            sample = self.processor(messages, max_length=self.max_text_tokens)
        except ValueError as e:
            reason = "text over budget" if "max_length" in str(e) else "bad conversation"
            raise SampleError(where, reason, str(e)) from None
        if (sample["labels"] == IGNORE_INDEX).all():
            raise SampleError(where, "empty conversation", "all labels masked")
        sample["visual_tokens"] = torch.tensor(self.processor.visual_tokens(sample))
        return sample


def sample_key(record: dict[str, Any]) -> str:
    """Stable key of a record (for stored teacher logits): its `id` within its source, else its file position."""
    rid = record.get("id")
    return f"{record.get('_source', '')}/{rid}" if rid is not None else str(record.get("_where", "?"))


class VambaDataset(torch.utils.data.Dataset):
    """Map-style dataset over annotation records that never fails on a bad sample.

    `records` is any sequence (a list, or a lazy index that reads a record when asked). A bad record is counted by
    reason, logged, appended to the optional JSONL skip log, and replaced by the next good record (index + 1,
    + 2, ...), so every batch is full and deterministic for a given index.
    """

    def __init__(self, records: Sequence[dict[str, Any]], builder: SampleBuilder, skip_log: str | Path | None = None):
        self.records = records
        self.builder = builder
        self.skip_log = Path(skip_log) if skip_log is not None else None
        self.skipped: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        for attempt in range(len(self.records)):
            try:
                record = self.records[(index + attempt) % len(self.records)]
                sample = self.builder(record)
                sample["sample_key"] = sample_key(record)
                return sample
            except SampleError as e:
                self._record_skip(e)
            except AnnotationError as e:  # a row group or shard that cannot be read
                self._record_skip(SampleError(str(e).split(": ")[0], "unreadable record", str(e)))
        raise RuntimeError(f"all {len(self.records)} samples of this dataset are unusable; see the skip log")

    def _record_skip(self, e: SampleError) -> None:
        self.skipped[e.reason] += 1
        logger.warning("skipping sample %s", e)
        if self.skip_log is not None:
            with open(self.skip_log, "a", encoding="utf-8") as f:  # append-only: safe to interrupt
                f.write(json.dumps({"where": e.where, "reason": e.reason, "detail": e.detail}) + "\n")
