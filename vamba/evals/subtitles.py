"""Subtitles as the official evaluations build them: Video-MME's lines at the sampled frames, LongVideoBench's
interleaved cues (docs/protocols.md sections 3 and 5).

Why here and not raw: a model fed the whole `.srt` (indices, timestamps, `<font>` markup) or a raw JSON dump sees a
different input from the one the leaderboards used. Both functions take the frames the model actually sees (frame
indices and the video's fps), so the subtitle text always matches the sampled frames. A file that does not parse
raises `SubtitleError`; the runner then answers without subtitles and counts it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


class SubtitleError(ValueError):
    """A subtitle file that cannot be read or parsed (the message names the file and the reason)."""


def videomme_lines(path: str | Path, indices: Sequence[int], fps: float) -> str:
    """Video-MME's subtitle text: for each sampled frame in order, the first cue with start < t < end at
    t = `pysubs2.make_time(fps=fps, frames=index)` (the official extractor's own call), its text with ``\\N`` turned
    into a space; a frame without a cue (or with a blank one) adds nothing; no de-duplication; joined by newlines.
    pysubs2 parses the `.srt` as there (it drops `<font>` tags)."""
    import pysubs2

    try:
        subs = pysubs2.load(str(path), encoding="utf-8")
    except (pysubs2.Pysubs2Error, UnicodeDecodeError, ValueError) as e:
        raise SubtitleError(f"{path}: subtitle file does not parse ({type(e).__name__}: {e})") from None
    lines = []
    for index in indices:
        t = pysubs2.make_time(fps=fps, frames=int(index))
        text = next((s.text.replace("\\N", " ") for s in subs if s.start < t < s.end), "")
        if text.strip():
            lines.append(text)
    return "\n".join(lines)


def _seconds(stamp: str) -> float:
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def _cue(cue: dict, duration: float) -> tuple[float, float, str]:
    if "timestamp" in cue:
        start, end = cue["timestamp"]
        return float(start), (end if isinstance(end, float) else duration), str(cue["text"])
    return _seconds(cue["start"]), _seconds(cue["end"]), str(cue["line"])


def longvideobench_lines(path: str | Path, timestamps: Sequence[float], offset: float, duration: float) -> str:
    """The subtitle elements LongVideoBench's loader interleaves with the frames, in its order, joined by newlines.

    Each cue (`timestamp` [s, e] + `text`, where an e that is not a float becomes the video's `duration`; or `start` /
    `end` "H:M:S.f" + `line`) is shifted by `offset` (`starting_timestamp_for_subtitles`), widened to its midpoint
    +- 0.5 s if shorter than 1 s, and kept only if a sampled frame time lies strictly inside it. Vamba reads the
    video as one stream, so the kept lines go between the video and the question instead of between frames.
    """
    try:
        cues = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(cues, list):
            raise ValueError(f"expected a JSON list of cues, got {type(cues).__name__}")
        kept = []
        for cue in cues:
            start, end, text = _cue(cue, duration)
            start, end = start - offset, end - offset
            if end - start < 1:
                mid = (start + end) / 2
                start, end = mid - 0.5, mid + 0.5
            if any(start < t < end for t in timestamps):
                kept.append(text)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise SubtitleError(f"{path}: subtitle file does not parse ({type(e).__name__}: {e})") from None
    return "\n".join(kept)
