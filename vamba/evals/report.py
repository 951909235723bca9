"""The evaluation report: JSON summary, a Markdown table with counts, and a PNG bar plot by category.

All three are written atomically (temp file + rename) so a reader never sees half a report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def atomic_write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    os.replace(tmp, path)


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """A Markdown report: header naming benchmark, model and frames; overall; one table per group."""
    left_out = (meta.get("selection") or {}).get("left_out_members")
    lines = [
        f"# {summary['benchmark']}" + (f" (PARTIAL: without {', '.join(left_out)})" if left_out else "")
        + f" — {meta.get('model', '?')} ({meta.get('model_type', '?')}), frames={meta.get('frames', '?')}",
        "",
        f"Protocol: {summary['scoring']} — {summary['rule']}",
        "",
        *_settings_lines(meta),
        *([*selection_lines(meta["selection"]), ""] if meta.get("selection") else []),
    ]
    if "lines" in summary:  # a judged caption benchmark: its metric's own tables
        errors = [f"- `{q}`: {e}" for q, e in meta.get("error_examples", [])[:10]]
        return "\n".join([*lines, *summary["lines"], *(["", "Errors (first 10):", "", *errors] if errors else [])
                          ]) + "\n"
    lines += [
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
    lines += _member_lines(summary)
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
    """Every effective setting of the run (per member for a composite benchmark); '(set)' marks a command-line
    override of the protocol's value."""
    def cells(block: dict[str, Any]) -> str:
        overridden = set(block.get("overridden") or ())
        return ", ".join(f"{k}={block[k]!r}" + (" (set)" if k in overridden else "") for k in SETTING_KEYS
                         if k in block)

    if meta.get("member_settings"):
        shared = {k: meta[k] for k in ("frames", "fps", "video_token_keep") if k in meta}
        return [f"Settings ({m}): {cells({**block, **shared})}" for m, block in meta["member_settings"].items()] + [""]
    line = cells(meta)
    return [f"Settings: {line}", ""] if line else []


def selection_lines(selection: dict[str, Any]) -> list[str]:
    """Which questions a composite benchmark (HourEval) holds: the rule, and per member the source and counts."""
    lines = [f"{selection['benchmark']} subsets: filtered files where present, else the duration rule: "
             f"{selection['rule']}", "",
             "| member | source | questions | videos | records in file | left out (duration unknown) | ids sha256 |",
             "|---|---|---:|---:|---:|---:|---|"]
    for m, b in selection["members"].items():
        lines.append(f"| {m} | {b['source']} | {b['questions']} | {b['videos']} | {b['in_file']} | {b['undecided']} "
                     f"| {b['ids_sha256']} |")
    lines.append(f"| all | | {selection['questions']} | | | | |")
    if selection.get("left_out_members"):
        lines += ["", f"PARTIAL: members left out (members=...): {', '.join(selection['left_out_members'])}"]
    return lines


def _member_lines(summary: dict[str, Any]) -> list[str]:
    """A composite benchmark's members side by side (each with its own headline), then each member's groups."""
    members = summary.get("members")
    if not members:
        return []
    lines = ["", "## Members", "", "Each member's own headline and rule; accuracy = correct / counted questions (the "
             "pooled figure adds these up).", "",
             "| member | questions | own headline (%) | accuracy (%) | correct | counted | unparsed | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m, b in members.items():
        o = b["overall"]
        lines.append(f"| {m} | {b.get('questions', '')} | {b['headline']:.2f} | {o['accuracy']:.2f} | {o['correct']} | "
                     f"{o['total']} | {b['unparsed']} | {b['errors']} |")
    o = summary["overall"]
    lines.append(f"| pooled | {summary.get('questions', '')} | {summary['headline']:.2f} | {o['accuracy']:.2f} | "
                 f"{o['correct']} | {o['total']} | {summary.get('unparsed', 0)} | {summary.get('errors', 0)} |")
    for m, b in members.items():
        lines += ["", f"### {m}", "", f"Rule: {b['rule']}"]
        for group, cats in b.get("groups", {}).items():
            lines += ["", f"{m} by {group}:", "", "| category | accuracy (%) | correct | total |",
                      "|---|---:|---:|---:|"]
            lines += [f"| {c} | {r['accuracy']:.2f} | {r['correct']} | {r['total']} |" for c, r in sorted(cats.items())]
    return lines


def plot(summary: dict[str, Any], path: Path, meta: dict[str, Any]) -> None:
    """Horizontal bars of accuracy per category of the largest group (plus overall)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = summary.get("groups", {})
    group = summary.get("plot_group") or (max(groups, key=lambda g: len(groups[g])) if groups else None)
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
    """Write `summary.json`, `report.md`, `report.png` (accuracy benchmarks) under `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "summary.json", "md": out / "report.md", "png": out / "report.png"}
    atomic_write(paths["json"], json.dumps({**summary, "meta": meta}, indent=2))
    atomic_write(paths["md"], markdown(summary, meta))
    if "overall" in summary and "accuracy" in summary["overall"]:
        plot(summary, paths["png"], meta)
    return paths
