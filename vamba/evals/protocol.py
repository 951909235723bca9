"""The two evaluation protocols, and the input and generation settings a protocol fixes for one benchmark.

``official`` is the benchmark's own evaluation (its prompt, answer extraction and aggregation); ``release`` is the
original Vamba release's evaluation, byte for byte (docs/protocols.md describes both). Prompts,
answer rules and aggregation live with each benchmark (`vamba.evals.benchmark.Benchmark`); this module holds what the
runner needs to read the video and generate: a `Settings` per (benchmark, protocol), and the command-line overrides
applied on top of it (`resolve`), so a report can list every effective setting and where it came from.

Where a benchmark's official evaluation leaves a setting to the model (frame count, resize, generation length), the
official protocol uses the released model's own setting, i.e. the release protocol's; where the official code
fixes one (MVBench's and MLVU's reference generation length, the frame samplers of MVBench, LongVideoBench and
Video-MME's frame/subtitle extractor), the official protocol uses that.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Any

from ..modeling.errors import UsageError


class Protocol(str, Enum):
    """`vamba eval protocol=...`: validated once, by the config schema."""

    official = "official"
    release = "release"

    def __str__(self) -> str:  # so `${protocol}` in a config path reads "release", not "Protocol.release"
        return self.value


PROTOCOLS: tuple[str, ...] = tuple(p.value for p in Protocol)
#: Frame samplers: the release's (`vamba.data.frames.linspace_indices`), the project's segment middles (``uniform``,
#: the synthetic benchmark's, which its needles are placed for) and the benchmarks' own (in their modules).
SAMPLERS: tuple[str, ...] = ("linspace", "uniform", "videomme", "longvideobench", "mvbench", "tarsier")


def check_protocol(protocol: str | Protocol) -> str:
    """The protocol's name; ValueError naming the valid ones otherwise."""
    value = protocol.value if isinstance(protocol, Protocol) else protocol
    if value not in PROTOCOLS:
        raise UsageError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    return value


@dataclass(frozen=True)
class Settings:
    """How one benchmark's videos are read and its replies generated under one protocol.

    - `frames`: frames sampled per video (per clip for MVBench), by `sampler` (`SAMPLERS`); an odd count loses its
      last frame (the release's processor pairs frames and drops the odd one);
    - `longest_edge`: the release's pre-resize (`vamba.data.frames.edge_resize_size`: longest edge to this, each
      side raised to `shortest_edge`), before the processor's own resize; None for no pre-resize;
    - `max_new_tokens`, `do_sample`, `temperature`, `top_p`, `top_k` (0: no top-k filter): generation; the greedy
      release scripts also pass top_p=0.9, which greedy decoding ignores;
    - `subtitles`: Video-MME's per-frame subtitle lines / LongVideoBench's interleaved subtitles (off: the paper's
      setting).
    """

    frames: int
    sampler: str = "linspace"
    longest_edge: int | None = 480
    shortest_edge: int = 256
    max_new_tokens: int = 512
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 0.9
    top_k: int = 0
    subtitles: bool = False

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise UsageError(f"unknown frame sampler {self.sampler!r}; expected one of {', '.join(SAMPLERS)}")

    def generation_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `generate` (sampling options only when sampling, so greedy stays plain)."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        return kwargs


#: Settings fields the command line may override: generation keys of EvalConfig, and FrameSpec fields under
#: `frames.` (None in the config = the protocol's value).
OVERRIDABLE = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "subtitles")
FRAME_OVERRIDABLE = {"count": "frames", "longest_edge": "longest_edge", "shortest_edge": "shortest_edge"}


def resolve(base: Settings, cfg: Any) -> tuple[Settings, dict[str, Any]]:
    """`base` with the config's explicit values applied; returns (settings, {field: value} of the overrides).

    `frames.count` sets the frame count (the cap for `frames.mode=fps|auto`); `frames.longest_edge=0` turns the
    pre-resize off.
    """
    changes: dict[str, Any] = {key: getattr(cfg, key) for key in OVERRIDABLE if getattr(cfg, key, None) is not None}
    frames = getattr(cfg, "frames", None)
    for key, field in FRAME_OVERRIDABLE.items():
        value = getattr(frames, key, None)
        if value is not None:
            changes[field] = (value or None) if field == "longest_edge" else int(value)
    overrides = {k: v for k, v in changes.items() if getattr(base, k) != v}
    return replace(base, **changes), overrides


def describe(settings: Settings, overrides: dict[str, Any]) -> dict[str, Any]:
    """Every effective setting, marking the command-line overrides (for the report)."""
    return {**asdict(settings), "overridden": sorted(overrides)}
