"""Read training annotation files as users download them, failing fast on malformed files.

Formats (`read_annotations`; a path is a file, a folder, or a glob):
- `llava`: LLaVA-style conversations, `{"id", "video" | "image", "conversations": [{"from", "value"}]}`: a JSON list
  or JSONL (LLaVA-Video-178K, LLaVA-OneVision's JSON form), or parquet with the image embedded as `{bytes, path}`
  (LLaVA-OneVision-Data as the hub serves it; a folder means every `*.parquet` below it).
- `caption`: image-caption pairs, JSONL/JSON `{"image": path, "caption": text}` or parquet with those columns.
- `webdataset`: tar shards whose members share a key: `<key>.jpg|png|jpeg|webp` + `<key>.txt` (the caption).

`columns` maps our field names to the file's (`{caption: vlm_caption}`). Parquet and webdataset sources hold an index
(row-group sizes; tar member offsets), not the data: a row or a member is read when its sample is served, so a
source of millions of images costs tens of bytes per record. A malformed file raises `AnnotationError` naming the
file and line (or row, or member): a bad annotation file is a setup mistake to fix before spending GPU hours,
unlike a bad *sample*, which training skips and counts.
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..modeling.errors import UsageError

FORMATS = ("llava", "caption", "webdataset")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
SPEAKERS = ("human", "gpt", "system", "user", "assistant")
FIELDS = {"llava": ("conversations", "id", "image", "video"), "caption": ("image", "caption"), "webdataset": ()}


class AnnotationError(UsageError):
    """An annotation file that cannot be read as its declared format (message names file and line)."""


def read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL file; the one JSONL reader of the project."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path}: cannot read annotation file as UTF-8 text ({e})") from None
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


def _json_records(path: Path, columns: dict[str, str]) -> list[dict[str, Any]]:
    """Records of a JSON list or JSONL file, each with `_where` (file:line or record) and `_root` (its folder)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path}: cannot read annotation file as UTF-8 JSON ({e})") from None
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise AnnotationError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        wheres = [f"{path} record {i}" for i in range(len(data))]
    else:
        lines = read_jsonl(path)
        data, wheres = [r for _, r in lines], [f"{path}:{n}" for n, _ in lines]
    root = str(path.parent)
    for rec, where in zip(data, wheres):
        if not isinstance(rec, dict):
            raise AnnotationError(f"{where} is {type(rec).__name__}, expected an object")
        for ours, theirs in columns.items():
            if theirs in rec:
                rec[ours] = rec.pop(theirs)
        rec["_where"], rec["_root"] = where, root
    return data


def check_llava(rec: dict[str, Any], where: str, error: type[Exception] = AnnotationError) -> None:
    """Shape of one LLaVA record (not media existence: that is per sample); raises `error(message)`."""
    conv = rec.get("conversations")
    if not isinstance(conv, list):
        raise error(f"{where}: field 'conversations' must be a list")
    for turn in conv:
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise error(f"{where}: each conversation turn needs 'from' and 'value'")
        if turn["from"] not in SPEAKERS:
            raise error(f"{where}: unknown speaker {turn['from']!r}")


def read_json_source(fmt: str, path: Path, columns: dict[str, str]) -> list[dict[str, Any]]:
    """LLaVA or caption records of one JSON/JSONL file, validated for shape."""
    records = _json_records(path, columns)
    for rec in records:
        if fmt == "llava":
            check_llava(rec, rec["_where"])
            for key in ("video", "image"):
                if rec.get(key) is not None and not isinstance(rec[key], (str, list)):
                    raise AnnotationError(f"{rec['_where']}: field '{key}' must be a path or a list of paths")
        elif not isinstance(rec.get("image"), str) or not isinstance(rec.get("caption"), str):
            raise AnnotationError(f"{rec['_where']}: caption records need string fields 'image' and 'caption'")
    return records


class ParquetRecords(Sequence):
    """Rows of parquet files, read one row group at a time when served (the last group read is kept).

    Holds the files' row-group sizes only; `columns` maps our field names to column names. Image columns stored
    as `{bytes, path}` structs (the `datasets` Image feature) come back as such dicts.
    """

    def __init__(self, files: list[Path], fields: Sequence[str], required: Sequence[str], columns: dict[str, str]):
        import pyarrow.parquet as pq

        self.files, self.fields, self._cache = [str(f) for f in files], {}, None
        groups, sizes = [], []
        for i, f in enumerate(files):
            try:
                pf = pq.ParquetFile(f)
            except Exception as e:  # pyarrow raises several types for a broken file
                raise AnnotationError(f"{f}: not a readable parquet file ({e})") from None
            names = set(pf.schema_arrow.names)
            mapped = {field: columns.get(field, field) for field in fields}
            missing = sorted(mapped[r] for r in required if mapped[r] not in names)
            if missing:
                raise AnnotationError(f"{f}: parquet lacks column(s) {missing} (columns: {sorted(names)})")
            self.fields[i] = {k: v for k, v in mapped.items() if v in names}
            groups += [(i, g) for g in range(pf.num_row_groups)]
            sizes += [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
        self.groups = np.array(groups, dtype=np.int64).reshape(-1, 2)
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        import pyarrow.parquet as pq

        g = int(np.searchsorted(self.starts, index, side="right")) - 1
        f, rg = (int(x) for x in self.groups[g])
        if self._cache is None or self._cache[0] != g:
            try:
                table = pq.ParquetFile(self.files[f]).read_row_group(rg, columns=list(self.fields[f].values()))
            except Exception as e:
                raise AnnotationError(f"{self.files[f]}: cannot read row group {rg} ({e})") from None
            self._cache = (g, table)
        table, row = self._cache[1], index - int(self.starts[g])
        first = int(self.starts[np.searchsorted(self.groups[:, 0], f)])  # the file's first row
        rec = {k: table.column(col)[row].as_py() for k, col in self.fields[f].items()}
        return {**rec, "_where": f"{self.files[f]} row {index - first}", "_root": str(Path(self.files[f]).parent)}

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers get the index, not the cached row group
        return {**self.__dict__, "_cache": None}


class TarRecords(Sequence):
    """Samples of webdataset tar shards, indexed by member offsets; image and caption bytes are read when served.

    `members[i]`: shard number, then (offset, size) of the image and of the `.txt`; `keys[i]`: the key. ~50 bytes.
    """

    def __init__(self, shards: list[Path]):
        self.shards = [str(s) for s in shards]
        index, keys = [np.zeros((0, 5), dtype=np.int64)], [np.zeros(0, dtype="S1")]
        for n, shard in enumerate(shards):  # per-shard arrays: Python objects live for one shard at a time
            rows, names = [], []
            for key, members in tar_samples(shard):
                if "image" not in members or "txt" not in members:
                    raise AnnotationError(f"{shard}: key {key!r} has no image/caption pair")
                names.append(key.encode())
                rows.append((n, *members["image"][1:], *members["txt"][1:]))
            index.append(np.array(rows, dtype=np.int64).reshape(-1, 5))
            keys.append(np.array(names, dtype=np.bytes_))
        self.members, self.keys = np.concatenate(index), np.concatenate(keys)

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, i: int) -> dict[str, Any]:
        n, img_at, img_size, txt_at, txt_size = (int(x) for x in self.members[i])
        key = self.keys[i].decode()
        where = f"{self.shards[n]}:{key}"
        try:
            with open(self.shards[n], "rb") as f:
                f.seek(img_at)
                image = f.read(img_size)
                f.seek(txt_at)
                caption = f.read(txt_size).decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise AnnotationError(f"{where}: cannot read sample ({e})") from None
        return {"image": {"bytes": image, "path": key}, "caption": caption, "_where": where}


def _tar_members(shard: Path):
    """(name, data offset, size) of each file of an uncompressed tar, parsed from its 512-byte headers.

    ~10x faster than `tarfile` (which builds a TarInfo per member): 3M samples are 9M members to index per rank.
    Handles ustar prefixes and GNU / pax long names; a header whose checksum fails is `AnnotationError`.
    """
    with open(shard, "rb") as f:
        pos, long_name = 0, None
        while (h := (f.seek(pos), f.read(512))[1]).strip(b"\0"):  # ends at the zero blocks or the file's end
            try:
                size, check = int(h[124:136].strip(b"\0 ") or b"0", 8), int(h[148:156].strip(b"\0 "), 8)
            except ValueError:
                check = size = -1
            if len(h) < 512 or check != sum(h[:148]) + 256 + sum(h[156:]):
                raise AnnotationError(f"{shard}: not an uncompressed tar shard (bad header at byte {pos})")
            kind, data = h[156:157], pos + 512
            if kind in (b"L", b"x"):  # the next member's name: GNU long name, or a pax `path` record
                f.seek(data)
                payload = f.read(size)
                pax = re.search(rb"\d+ path=([^\n]*)\n", payload) if kind == b"x" else None
                long_name = (pax.group(1) if pax else payload.rstrip(b"\0") if kind == b"L" else None) or long_name
            else:
                if kind in (b"0", b"\0"):
                    prefix = h[345:500].rstrip(b"\0") if h[257:262] == b"ustar" else b""
                    name = long_name or (prefix + b"/" if prefix else b"") + h[:100].rstrip(b"\0")
                    yield name.decode("utf-8", "replace"), data, size
                long_name = None
            pos = data + (size + 511) // 512 * 512


def tar_samples(shard: str | Path):
    """(key, {"image"|<suffix>: (name, data offset, size)}) per key of a webdataset shard, in order."""
    key, members = None, {}
    try:
        for name, offset, size in _tar_members(Path(shard)):
            stem, dot, suffix = name.rpartition(".")
            if not dot:
                continue
            if stem != key and members:
                yield key, members
                members = {}
            key = stem
            members["image" if f".{suffix.lower()}" in IMAGE_SUFFIXES else suffix] = (name, offset, size)
    except OSError as e:
        raise AnnotationError(f"{shard}: cannot read tar shard ({e})") from None
    if members:
        yield key, members


def find_files(path: str | Path, suffix: str) -> list[Path]:
    """A file, every `*suffix` below a folder, or the matches of a glob; sorted."""
    text = str(path)
    if any(c in text for c in "*?["):
        found = sorted(Path(p) for p in glob.glob(text, recursive=True))
    else:
        found = sorted(Path(path).rglob(f"*{suffix}")) if Path(path).is_dir() else [Path(path)]
    if not found or not all(p.exists() for p in found):
        raise AnnotationError(f"{path}: annotation file does not exist" + (" (no match)" if not found else ""))
    return found


def _is_parquet(path: Path) -> bool:
    with open(path, "rb") as f:
        return path.suffix == ".parquet" or f.read(4) == b"PAR1"


def read_annotations(fmt: str, path: str | Path, columns: dict[str, str] | None = None) -> Sequence[dict[str, Any]]:
    """Records of `fmt` (one of `FORMATS`) at `path` (file, folder or glob), as a list or a lazy sequence."""
    columns = dict(columns or {})
    if fmt not in FORMATS:
        raise AnnotationError(f"{path}: unknown annotation format {fmt!r}; expected one of {FORMATS}")
    unknown = sorted(set(columns) - set(FIELDS[fmt]))
    if unknown:
        raise AnnotationError(f"{path}: columns {unknown} are not fields of format {fmt!r} {FIELDS[fmt]}")
    if fmt == "webdataset":
        return TarRecords(find_files(path, ".tar"))
    files = find_files(path, ".parquet")
    if all(_is_parquet(f) for f in files):
        required = ("conversations",) if fmt == "llava" else ("image", "caption")
        return ParquetRecords(files, FIELDS[fmt], required, columns)
    return [rec for f in files for rec in read_json_source(fmt, f, columns)]
