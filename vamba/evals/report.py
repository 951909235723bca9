"""The evaluation report: JSON summary, a Markdown table with counts, and a PNG bar plot by category.

All three are written atomically (temp file + rename) so a reader never sees half a report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _atomic_write(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    os.replace(tmp, path)


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """A Markdown report: header naming benchmark, model and frames; overall; one table per group."""
    lines = [
        f"# {summary['benchmark']} — {meta.get('model', '?')} ({meta.get('model_type', '?')}), "
        f"frames={meta.get('frames', '?')}",
        "",
        f"Protocol: {summary['scoring']} — {summary['rule']}",
        "",
        *_settings_lines(meta),
        f"**Headline: {summary['headline']:.2f}%**",
        "",
        "| split | accuracy (%) | correct | total |",
        "|---|---:|---:|---:|",
        f"| overall | {summary['overall']['accuracy']:.2f} | {summary['overall']['correct']} | "
        f"{summary['overall']['total']} |",
    ]
    for group, cats in summary.get("groups", {}).items():
        lines += ["", f"### by {group}", "", "| category | accuracy (%) | correct | total |", "|---|---:|---:|---:|"]
        for cat, row in sorted(cats.items()):
            lines.append(f"| {cat} | {row['accuracy']:.2f} | {row['correct']} | {row['total']} |")
    lines += ["", f"Unparsed answers: {summary.get('unparsed', 0)}; questions with errors: {summary.get('errors', 0)}"]
    if meta.get("subtitle_files"):
        counts = ", ".join(f"{k} {v}" for k, v in sorted(meta["subtitle_files"].items()))
        lines += ["", f"Subtitles (per question): {counts} (unparsable files were answered without subtitles)"]
    if meta.get("error_examples"):
        lines += ["", "Errors (first 10):", ""] + [f"- `{q}`: {e}" for q, e in meta["error_examples"][:10]]
    return "\n".join(lines) + "\n"


SETTING_KEYS = ("frames", "sampler", "longest_edge", "shortest_edge", "max_new_tokens", "do_sample", "temperature",
                "top_p", "top_k", "subtitles", "fps", "video_token_keep", "system_prompt", "response_prefix")


def _settings_lines(meta: dict[str, Any]) -> list[str]:
    """Every effective setting of the run; '(set)' marks a command-line override of the protocol's value."""
    overridden = set(meta.get("overridden") or ())
    cells = [f"{k}={meta[k]!r}" + (" (set)" if k in overridden else "") for k in SETTING_KEYS if k in meta]
    return [f"Settings: {', '.join(cells)}", ""] if cells else []


def plot(summary: dict[str, Any], path: Path, meta: dict[str, Any]) -> None:
    """Horizontal bars of accuracy per category of the largest group (plus overall)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = summary.get("groups", {})
    group = max(groups, key=lambda g: len(groups[g])) if groups else None
    cats = sorted(groups[group].items()) if group else []
    names = ["overall"] + [c for c, _ in cats]
    values = [summary["overall"]["accuracy"]] + [r["accuracy"] for _, r in cats]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    ax.barh(names[::-1], values[::-1], color=["#4c72b0"] * len(cats) + ["#dd8452"])
    for y, v in enumerate(values[::-1]):
        ax.text(v + 0.5, y, f"{v:.1f}", va="center", fontsize=8)
    if meta.get("chance") is not None:
        ax.axvline(meta["chance"], color="grey", linestyle="--", linewidth=1, label=f"chance {meta['chance']:.0f}%")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 105)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(
        f"{summary['benchmark']} by {group or 'overall'} — {meta.get('model', '')}, frames={meta.get('frames')}",
        fontsize=9,
    )
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def write_report(summary: dict[str, Any], meta: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write `summary.json`, `report.md`, `report.png` under `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "summary.json", "md": out / "report.md", "png": out / "report.png"}
    _atomic_write(paths["json"], json.dumps({**summary, "meta": meta}, indent=2))
    _atomic_write(paths["md"], markdown(summary, meta))
    plot(summary, paths["png"], meta)
    return paths
