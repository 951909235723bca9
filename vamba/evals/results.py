"""Per-question results as real JSONL: appended one line per answered question, resumable, kill-safe.

Each line is written with one `write` of a complete line, then flushed and fsynced, so a run killed at any moment
(kill -9 included) loses at most the question in flight. A partial last line (killed mid-write) is detected on the
next start, reported, and cut off before new lines are appended; completed lines are never rewritten.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a results file (a missing file is empty)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with open(path, "rb") as f:
        data = f.read()
    for lineno, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if lineno == data.count(b"\n") + 1:  # last line without newline: an interrupted write
                logger.warning("%s: ignoring a partially written last line", path)
                break
            raise ValueError(f"{path}:{lineno}: corrupt results line (not JSON)") from None
    return records


class ResultsWriter:
    """Append-only writer; repairs a torn last line left by a killed run before appending."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._f = open(self.path, "a", encoding="utf-8")

    def _repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(keep)

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
