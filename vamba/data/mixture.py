"""Data mixtures: several annotation sources, each with its own format, size control and frame settings.

Configured in Hydra YAML (`configs/data/*.yaml`) against the structured schema below, so an unknown key fails at
load time. Example:

    sources:
      - name: llava_video_178k
        format: llava
        annotation: /data/LLaVA-Video-178K/0_30_s_academic_v0_1/0_30_s_academic_mc_v0_1_qa_processed.json
        root: /data/LLaVA-Video-178K/0_30_s_academic_v0_1
        weight: 1.0            # multiplier on the source size: 0.5 takes half, 2.0 repeats it twice
        max_samples: null      # or a hard cap after weighting
        frames: {count: 64, mode: uniform}   # a FrameSpec (vamba.data.frames)

The mixture is deterministic for a seed: each source is weighted and shuffled with its own seeded generator,
then the sources are interleaved by a seeded shuffle of the concatenation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore

from ..modeling.errors import UsageError
from .annotations import FORMATS, read_annotations
from .dataset import SampleBuilder, VambaDataset
from .frames import FrameSpec, as_spec
from .processor import VambaProcessor


@dataclass
class SourceConfig:
    name: str = "???"
    format: str = "llava"
    annotation: str = "???"
    root: str | None = None
    weight: float = 1.0
    max_samples: int | None = None
    frames: FrameSpec = field(default_factory=FrameSpec)


@dataclass
class PackingConfig:
    enabled: bool = False
    max_text_tokens: int = 124_000
    max_visual_tokens: int = 120_000


@dataclass
class MixtureConfig:
    name: str = "mixture"
    sources: list[SourceConfig] = field(default_factory=list)
    seed: int = 0
    max_text_tokens: int | None = None  # per sample; longer conversations are skipped and counted
    packing: PackingConfig = field(default_factory=PackingConfig)


ConfigStore.instance().store(group="data", name="data_schema", node=MixtureConfig)  # configs/data/*.yaml


def _select(records: list[dict[str, Any]], src: SourceConfig, seed: int) -> list[dict[str, Any]]:
    if src.weight < 0:
        raise UsageError(f"data source {src.name!r}: weight must be >= 0, got {src.weight}")
    rng = random.Random(f"{seed}:{src.name}")
    whole, frac = divmod(src.weight, 1.0)
    picked = records * int(whole) + rng.sample(records, round(frac * len(records)))
    rng.shuffle(picked)
    return picked[: src.max_samples] if src.max_samples is not None else picked


def build_mixture(
    cfg: MixtureConfig | Any, processor: VambaProcessor, skip_log: str | Path | None = None
) -> VambaDataset:
    """Read every source, apply weights/caps and return one dataset whose records remember their source.

    `cfg` may be a `MixtureConfig` or an OmegaConf node with that schema.
    """
    if not cfg.sources:
        raise UsageError(f"data mixture {cfg.name!r} has no sources")
    builders: dict[str, SampleBuilder] = {}
    records: list[dict[str, Any]] = []
    for src in cfg.sources:
        if src.format not in FORMATS:
            raise UsageError(f"data source {src.name!r}: format must be one of {FORMATS}, got {src.format!r}")
        builders[src.name] = SampleBuilder(processor, src.format, src.root, as_spec(src.frames), cfg.max_text_tokens)
        for rec in _select(read_annotations(src.format, src.annotation), src, cfg.seed):
            records.append({**rec, "_source": src.name})
    random.Random(cfg.seed).shuffle(records)
    return VambaDataset(records, _MixtureBuilder(builders), skip_log=skip_log)


class _MixtureBuilder:
    """Dispatch each record to the builder of its source."""

    def __init__(self, builders: dict[str, SampleBuilder]):
        self.builders = builders

    def __call__(self, record: dict[str, Any]):
        return self.builders[record["_source"]](record)
