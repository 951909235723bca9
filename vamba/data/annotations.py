"""Read training annotation files as users download them, failing fast on malformed files.

Formats:
- `llava`: LLaVA-style conversations (the format of LLaVA-OneVision-Data and LLaVA-Video-178K), a JSON list or
  JSONL, each record `{"id", "video" | "image", "conversations": [{"from": "human"|"gpt"|"system", "value"}]}`
  with `<video>` / `<image>` placeholders in the human turns.
- `caption`: image-caption pairs, JSONL/JSON `{"image": path, "caption": text}` or a parquet file with those
  columns (read with the `datasets` library's Arrow reader, without loading images).
- `webdataset`: tar shards whose members share a key: `<key>.jpg|png|jpeg` + `<key>.txt` (the caption).

A malformed file raises `AnnotationError` naming the file and line (or member): a bad annotation file is a
setup mistake to fix before spending GPU hours, unlike a bad *sample*, which training skips and counts.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..modeling.errors import UsageError

FORMATS = ("llava", "caption", "webdataset")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


class AnnotationError(UsageError):
    """An annotation file that cannot be read as its declared format (message names file and line)."""


def read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL file; the one JSONL reader of the project."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read annotation file ({e.strerror})") from None
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise AnnotationError(f"{path}:{lineno}: invalid JSON line ({e.msg})") from None
        if not isinstance(row, dict):
            raise AnnotationError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append((lineno, row))
    return rows


def _json_records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise AnnotationError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        for i, rec in enumerate(data):
            if not isinstance(rec, dict):
                raise AnnotationError(f"{path}: record {i} is {type(rec).__name__}, expected an object")
        return data
    return [{**rec, "_line": lineno} for lineno, rec in read_jsonl(path)]


def _where(path: Path, rec: dict[str, Any], index: int) -> str:
    return f"{path}:{rec['_line']}" if "_line" in rec else f"{path} record {index}"


def read_llava(path: str | Path) -> list[dict[str, Any]]:
    """LLaVA conversation records, validated for shape (not for media existence: that is per-sample)."""
    path = Path(path)
    records = _json_records(path)
    for i, rec in enumerate(records):
        where = _where(path, rec, i)
        conv = rec.get("conversations")
        if not isinstance(conv, list):
            raise AnnotationError(f"{where}: field 'conversations' must be a list")
        for turn in conv:
            if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
                raise AnnotationError(f"{where}: each conversation turn needs 'from' and 'value'")
            if turn["from"] not in ("human", "gpt", "system", "user", "assistant"):
                raise AnnotationError(f"{where}: unknown speaker {turn['from']!r}")
        for key in ("video", "image"):
            if key in rec and not isinstance(rec[key], (str, list)):
                raise AnnotationError(f"{where}: field '{key}' must be a path or a list of paths")
        rec["_where"] = where
    return records


def read_captions(path: str | Path) -> list[dict[str, Any]]:
    """Image-caption records from JSON/JSONL or parquet."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several types for a broken file
            raise AnnotationError(f"{path}: not a readable parquet file ({e})") from None
        missing = {"image", "caption"} - set(table.column_names)
        if missing:
            raise AnnotationError(f"{path}: parquet lacks column(s) {sorted(missing)}")
        rows = table.select(["image", "caption"]).to_pylist()
        records = [{**r, "_where": f"{path} row {i}"} for i, r in enumerate(rows)]
    else:
        records = _json_records(path)
        for i, rec in enumerate(records):
            where = _where(path, rec, i)
            if not isinstance(rec.get("image"), str) or not isinstance(rec.get("caption"), str):
                raise AnnotationError(f"{where}: caption records need string fields 'image' and 'caption'")
            rec["_where"] = where
    return records


def iter_webdataset(shard: str | Path) -> Iterator[dict[str, Any]]:
    """Yield `{"image_bytes", "caption", "_where"}` per key of a webdataset tar shard, in member order."""
    shard = Path(shard)
    try:
        tar = tarfile.open(shard)
    except (tarfile.TarError, OSError) as e:
        raise AnnotationError(f"{shard}: not a readable tar shard ({e})") from None
    with tar:
        pending: dict[str, dict[str, Any]] = {}
        for member in tar:
            if not member.isfile():
                continue
            key, dot, suffix = member.name.rpartition(".")
            if not dot:
                continue
            entry = pending.setdefault(key, {"_where": f"{shard}:{key}"})
            data = tar.extractfile(member).read()
            if f".{suffix.lower()}" in IMAGE_SUFFIXES:
                entry["image_bytes"] = data
            elif suffix == "txt":
                entry["caption"] = data.decode("utf-8").strip()
            if "image_bytes" in entry and "caption" in entry:
                yield pending.pop(key)
        for key in pending:
            raise AnnotationError(f"{shard}: key {key!r} has no image/caption pair")


def read_annotations(fmt: str, path: str | Path) -> list[dict[str, Any]]:
    """Dispatch on `fmt` (one of `FORMATS`); `webdataset` takes a shard or a folder of `*.tar` shards."""
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"{path}: annotation file does not exist")
    if fmt == "llava":
        return read_llava(path)
    if fmt == "caption":
        return read_captions(path)
    if fmt == "webdataset":
        shards = sorted(path.glob("*.tar")) if path.is_dir() else [path]
        return [rec for shard in shards for rec in iter_webdataset(shard)]
    raise AnnotationError(f"{path}: unknown annotation format {fmt!r}; expected one of {FORMATS}")
