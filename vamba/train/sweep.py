"""Summarise a Hydra multirun sweep: one row per run with its ablation settings, final loss and eval headline (and what
it measures: accuracy, or a caption metric such as G-VEval with its judge).

python scripts/sweep_table.py outputs/sweeps/<sweep>      # or any folder holding run directories
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def _final_loss(run: Path) -> float | None:
    path = run / "log_history.jsonl"
    if not path.exists():
        return None
    losses = [r["loss"] for r in map(json.loads, path.read_text().splitlines()) if "loss" in r]
    return float(losses[-1]) if losses else None


def sweep_rows(root: str | Path) -> list[dict]:
    """Rows for every run directory (one with `config.yaml`) under `root`, sorted by run name."""
    rows = []
    for cfg_path in sorted(Path(root).rglob("config.yaml")):
        run = cfg_path.parent
        cfg = yaml.safe_load(cfg_path.read_text())  # safe loader: these files are data
        vamba = (cfg.get("model") or {}).get("vamba") or {}
        summary = run / "eval" / "summary.json"
        scored = json.loads(summary.read_text()) if summary.exists() else {}
        judge = scored.get("judge")  # a caption metric names its judge; accuracy has none
        rows.append(
            {
                "run": cfg.get("run_name", run.name),
                "mixer": vamba.get("mixer_type", "mamba2"),
                "cross_attn_init": vamba.get("cross_attn_init", "self_attn"),
                "distill": ((cfg.get("train") or {}).get("distill") or {}).get("coeff", 0.0),
                "final_loss": _final_loss(run),
                "metric": scored.get("metric", "accuracy (%)" if scored else "–") + (
                    f" ({judge['requested_model']})" if judge else " (no judge)" if "metric" in scored else ""),
                "score": scored.get("headline"),
            }
        )
    return sorted(rows, key=lambda r: str(r["run"]))


def markdown_table(rows: list[dict]) -> str:
    head = "| run | mixer | cross-attn init | distill λ | final loss | eval | score |\n|---|---|---|--:|--:|---|--:|\n"
    fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
    return head + "".join(
        f"| {r['run']} | {r['mixer']} | {r['cross_attn_init']} | {r['distill']} | {fmt(r['final_loss'], '.3f')} | "
        f"{r['metric']} | {fmt(r['score'], '.2f')} |\n"
        for r in rows
    )
