"""Benchmark registry: every module in this package defines one module-level `BENCHMARK`, found automatically.

Adding a benchmark means adding one file here that defines `BENCHMARK = SomeBenchmark()` (a
`vamba.evals.benchmark.Benchmark`); modules whose name starts with "_" are helpers and are skipped.
"""

from __future__ import annotations

import importlib
import pkgutil

from vamba.evals.benchmark import Benchmark

from ...modeling.errors import UsageError

_REGISTRY: dict[str, Benchmark] | None = None


def _discover() -> dict[str, Benchmark]:
    global _REGISTRY
    if _REGISTRY is None:
        found: dict[str, Benchmark] = {}
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{__name__}.{info.name}")
            bench = getattr(module, "BENCHMARK", None)
            if not isinstance(bench, Benchmark):
                raise TypeError(f"{module.__name__} must define BENCHMARK, a vamba.evals.benchmark.Benchmark")
            if bench.name in found:
                raise ValueError(f"two benchmark modules are named {bench.name!r}")
            found[bench.name] = bench
        _REGISTRY = found
    return _REGISTRY


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def list_benchmarks() -> list[str]:
    """Names of every known benchmark, sorted."""
    return sorted(_discover())


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called `name` (case, '-' and '_' ignored: 'Video-MME' finds 'videomme')."""
    registry = _discover()
    by_key = {_key(n): b for n, b in registry.items()}
    try:
        return by_key[_key(name)]
    except KeyError:
        raise UsageError(f"unknown benchmark {name!r}; known benchmarks: {', '.join(sorted(registry))}") from None
