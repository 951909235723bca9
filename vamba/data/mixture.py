"""Data mixtures: several annotation sources, each with its own format, size control and frame settings.

Configured in Hydra YAML (`configs/data/*.yaml`) against the structured schema below, so an unknown key fails at
load time. Example:

    sources:
      - name: llava_video_178k
        format: llava
        kind: video            # what every probed sample must include some of: image | video | text | null
        annotation: /data/LLaVA-Video-178K/*/*_processed.json   # a file, a folder (of parquet) or a glob
        weight: 1.0            # multiplier on the source size: 0.5 takes half, 2.0 repeats it twice
        max_samples: null      # or a hard cap after weighting
        columns: {}            # our field -> the file's column, e.g. {caption: vlm_caption}
        frames: {count: 64, mode: uniform}   # a FrameSpec (vamba.data.frames)

The mixture is deterministic for a seed: each source is weighted and shuffled with its own seeded generator,
then the sources are interleaved by a seeded permutation. It holds two integer arrays (source, row), not the
records: a 3M-record mixture of parquet or webdataset sources costs ~40 bytes a record
(`scripts/bench_data_memory.py`). At start-up each source is probed (`check_samples` records, media references
only, then built until one sample succeeds): a source that yields no usable sample, or none of its declared `kind`,
stops the run with the counts and reasons, before any GPU time is spent.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.config_store import ConfigStore

from ..modeling.errors import UsageError
from .annotations import FORMATS, AnnotationError, read_annotations
from .dataset import CAPTION_PROMPTS, SampleBuilder, SampleError, VambaDataset, sample_kind
from .frames import FrameSpec, as_spec
from .processor import VambaProcessor

logger = logging.getLogger(__name__)
KINDS = ("image", "video", "text")


@dataclass
class SourceConfig:
    name: str = "???"
    format: str = "llava"
    annotation: str = "???"
    root: str | None = None
    kind: str | None = None  # caption and webdataset sources are "image"
    weight: float = 1.0
    max_samples: int | None = None
    columns: dict[str, str] = field(default_factory=dict)
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
    caption_prompt: str = "fixed"  # stage-1 user turn: "fixed" (CAPTION_PROMPT) | "release" (one of 20 per sample)
    check_samples: int = 16  # records of each source probed at start-up
    packing: PackingConfig = field(default_factory=PackingConfig)


ConfigStore.instance().store(group="data", name="data_schema", node=MixtureConfig)  # configs/data/*.yaml


def _select(n: int, src: SourceConfig, seed: int) -> np.ndarray:
    """Row numbers of a source after its weight, shuffle and cap."""
    if src.weight < 0:
        raise UsageError(f"data source {src.name!r}: weight must be >= 0, got {src.weight}")
    rng = np.random.default_rng([seed, zlib.crc32(src.name.encode())])
    whole, frac = divmod(src.weight, 1.0)
    picked = np.concatenate([np.tile(np.arange(n), int(whole)), rng.choice(n, round(frac * n), replace=False)])
    rng.shuffle(picked)
    return picked[: src.max_samples] if src.max_samples is not None else picked


class MixtureIndex(Sequence):
    """The mixture's records in order: (source, row) pairs, each record read from its source when asked."""

    def __init__(self, sources: list[tuple[str, Sequence[dict[str, Any]]]], source_ids: np.ndarray, rows: np.ndarray):
        self.sources, self.source_ids, self.rows = sources, source_ids, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        name, records = self.sources[int(self.source_ids[i])]
        return {**records[int(self.rows[i])], "_source": name, "_index": int(i)}


def _check_source(src: SourceConfig, records: Sequence[dict[str, Any]], rows: np.ndarray, builder: SampleBuilder,
                  probe: int) -> Counter[str]:
    """Kinds of the first `probe` selected records; raises naming the source when none is usable or of its kind."""
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    planned = []
    for j in rows[:probe]:
        try:
            record = records[int(j)]
            kinds[sample_kind(builder.plan(record))] += 1
            planned.append(record)
        except (SampleError, AnnotationError) as e:
            reasons[getattr(e, "reason", "unreadable record")] += 1
    for record in planned:  # decode until one sample builds
        try:
            builder(record)
            break
        except SampleError as e:
            reasons[e.reason] += 1
    else:
        raise UsageError(f"data source {src.name!r} ({src.annotation}): no usable sample among the "
                         f"{min(probe, len(rows))} probed of {len(records)} records; "
                         f"reasons: {dict(sorted(reasons.items()))}")
    kind = src.kind or (None if src.format == "llava" else "image")
    if kind is not None and not kinds[kind]:
        raise UsageError(f"data source {src.name!r} ({src.annotation}) declares kind {kind!r} but none of "
                         f"{min(probe, len(rows))} probed records carries one: {dict(sorted(kinds.items()))}; "
                         f"skipped: {dict(sorted(reasons.items()))}")
    return kinds


def build_mixture(
    cfg: MixtureConfig | Any, processor: VambaProcessor, skip_log: str | Path | None = None
) -> VambaDataset:
    """Index every source, apply weights/caps, probe each source and return one dataset over the mixture.

    `cfg` may be a `MixtureConfig` or an OmegaConf node with that schema.
    """
    if not cfg.sources:
        raise UsageError(f"data mixture {cfg.name!r} has no sources")
    if cfg.caption_prompt not in CAPTION_PROMPTS:
        raise UsageError(f"data.caption_prompt must be one of {CAPTION_PROMPTS}, got {cfg.caption_prompt!r}")
    builders: dict[str, SampleBuilder] = {}
    sources, ids, rows = [], [], []
    for n, src in enumerate(cfg.sources):
        if src.format not in FORMATS:
            raise UsageError(f"data source {src.name!r}: format must be one of {FORMATS}, got {src.format!r}")
        if src.kind is not None and src.kind not in KINDS:
            raise UsageError(f"data source {src.name!r}: kind must be one of {KINDS} or null, got {src.kind!r}")
        builders[src.name] = SampleBuilder(processor, src.format, src.root, as_spec(src.frames), cfg.max_text_tokens,
                                           cfg.caption_prompt, cfg.seed)
        records = read_annotations(src.format, src.annotation, dict(src.columns or {}))
        picked = _select(len(records), src, cfg.seed)
        if len(records) == 0 or len(picked):  # a weight or cap of 0 switches a source off
            kinds = _check_source(src, records, picked, builders[src.name], cfg.check_samples)
            logger.info("data source %s: %d records, %d in the mixture; probed kinds %s", src.name, len(records),
                        len(picked), dict(kinds))
        sources.append((src.name, records))
        ids.append(np.full(len(picked), n, dtype=np.int16))
        rows.append(picked)
    order = np.random.default_rng(cfg.seed).permutation(sum(len(r) for r in rows))
    index = MixtureIndex(sources, np.concatenate(ids)[order], np.concatenate(rows)[order])
    return VambaDataset(index, _MixtureBuilder(builders), skip_log=skip_log)


class _MixtureBuilder:
    """Dispatch each record to the builder of its source."""

    def __init__(self, builders: dict[str, SampleBuilder]):
        self.builders = builders

    def __call__(self, record: dict[str, Any]):
        return self.builders[record["_source"]](record)
