"""Training samples: annotation record -> chat messages -> processed model inputs, skipping bad samples.

A long run must never die on one bad file: unreadable media, a conversation with nothing to train on, or text
over the token budget make `SampleBuilder` raise `SampleError`; `VambaDataset` catches it, counts it by reason,
logs the path and reason, appends it to an optional JSONL skip log, and serves the next good sample instead.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .frames import FrameSpec
from .processor import IGNORE_INDEX, Message, VambaProcessor
from .prompts import CAPTION_PROMPT

logger = logging.getLogger(__name__)

SPEAKERS = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_PLACEHOLDER = re.compile(r"<(image|video)>")


class SampleError(Exception):
    """A training sample that cannot be used; `reason` is a short category for counting."""

    def __init__(self, where: str, reason: str, detail: str = ""):
        super().__init__(f"{where}: {reason}{': ' + detail if detail else ''}")
        self.where, self.reason, self.detail = where, reason, detail


def llava_to_messages(record: dict[str, Any]) -> tuple[list[Message], list[tuple[str, str]]]:
    """LLaVA conversation -> chat messages with `{"type": "image"|"video", <kind>: path}` items.

    `<image>`/`<video>` placeholders mark where media goes; media without a placeholder is put before the first
    human turn's text (LLaVA's convention). Returns the messages and the (kind, path) list in order.
    """
    media = []
    for kind in ("image", "video"):
        value = record.get(kind)
        if value:
            media += [(kind, p) for p in ([value] if isinstance(value, str) else value)]
    queue = list(media)
    messages: list[Message] = []
    for turn in record["conversations"]:
        role = SPEAKERS[turn["from"]]
        text = turn["value"]
        if role != "user":
            messages.append({"role": role, "content": text})
            continue
        content: list[dict[str, Any]] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(text):
            if text[pos : m.start()].strip():
                content.append({"type": "text", "text": text[pos : m.start()].strip("\n")})
            kinds = [i for i, (k, _) in enumerate(queue) if k == m.group(1)]
            if not kinds:
                raise SampleError(record.get("_where", "?"), "placeholder without media", m.group(0))
            kind, path = queue.pop(kinds[0])
            content.append({"type": kind, kind: path})
            pos = m.end()
        if text[pos:].strip():
            content.append({"type": "text", "text": text[pos:].lstrip("\n")})
        messages.append({"role": "user", "content": content})
    if queue:
        first_user = next((m for m in messages if m["role"] == "user"), None)
        if first_user is None:
            raise SampleError(record.get("_where", "?"), "media but no human turn")
        first_user["content"] = [{"type": k, k: p} for k, p in queue] + first_user["content"]
    return messages, media


class SampleBuilder:
    """Record of one annotation format -> processed sample (`VambaProcessor` output), or `SampleError`."""

    def __init__(self, processor: VambaProcessor, fmt: str, root: str | Path | None = None,
                 frames: FrameSpec | None = None, max_text_tokens: int | None = None):
        self.processor = processor
        self.fmt = fmt
        self.root = Path(root) if root is not None else None
        self.frames = frames or FrameSpec()
        self.max_text_tokens = max_text_tokens

    def _path(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() or self.root is None else self.root / p

    def _load(self, kind: str, rel: str, where: str) -> np.ndarray:
        path = self._path(rel)
        if kind == "image":
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(path) as im:
                    return np.asarray(im.convert("RGB"))
            except (OSError, UnidentifiedImageError) as e:
                raise SampleError(where, "unreadable image", f"{path} ({e})") from None
        from .video import VideoReadError, load_video

        # Unset pixel bounds take the processor's, so frames are resized once, to what the model will see.
        vision = self.processor.vision
        try:
            return load_video(path, self.frames.fill(min_pixels=vision.min_pixels, max_pixels=vision.max_pixels)).frames
        except VideoReadError as e:
            raise SampleError(where, "unreadable video", str(e)) from None

    def messages(self, record: dict[str, Any]) -> list[Message]:
        """Chat messages with media loaded as arrays."""
        where = record.get("_where", "?")
        if self.fmt == "llava":
            messages, _ = llava_to_messages(record)
        else:  # caption / webdataset
            if not str(record.get("caption", "")).strip():
                raise SampleError(where, "empty caption")
            image: Any = record.get("image")
            if "image_bytes" in record:
                import io

                from PIL import Image

                try:
                    image = np.asarray(Image.open(io.BytesIO(record["image_bytes"])).convert("RGB"))
                except OSError as e:
                    raise SampleError(where, "unreadable image", str(e)) from None
            messages = [
                {"role": "user",
                 "content": [{"type": "image", "image": image}, {"type": "text", "text": CAPTION_PROMPT}]},
                {"role": "assistant", "content": record["caption"]},
            ]
        if not any(m["role"] == "assistant" and str(m["content"]).strip() for m in messages):
            raise SampleError(where, "empty conversation", "no assistant turn to train on")
        for msg in messages:
            if isinstance(msg["content"], list):
                for item in msg["content"]:
                    kind = item["type"]
                    if kind in ("image", "video") and isinstance(item[kind], (str, Path)):
                        item[kind] = self._load(kind, str(item[kind]), where)
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

    A bad record is counted by reason, logged, appended to the optional JSONL skip log, and replaced by the
    next good record (index + 1, + 2, ...), so every batch is full and deterministic for a given index.
    """

    def __init__(self, records: list[dict[str, Any]], builder: SampleBuilder, skip_log: str | Path | None = None):
        self.records = records
        self.builder = builder
        self.skip_log = Path(skip_log) if skip_log is not None else None
        self.skipped: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        for attempt in range(len(self.records)):
            record = self.records[(index + attempt) % len(self.records)]
            try:
                sample = self.builder(record)
                sample["sample_key"] = sample_key(record)
                return sample
            except SampleError as e:
                self._record_skip(e)
        raise RuntimeError(f"all {len(self.records)} samples of this dataset are unusable; see the skip log")

    def _record_skip(self, e: SampleError) -> None:
        self.skipped[e.reason] += 1
        logger.warning("skipping sample %s", e)
        if self.skip_log is not None:
            with open(self.skip_log, "a", encoding="utf-8") as f:  # append-only: safe to interrupt
                f.write(json.dumps({"where": e.where, "reason": e.reason, "detail": e.detail}) + "\n")
