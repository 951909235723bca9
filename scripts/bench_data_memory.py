#!/usr/bin/env python3
"""Memory of building a training mixture vs its number of records, up to the paper's ~3M stage-1 images (CPU).

Each row runs in a fresh process and reports the resident memory `build_mixture` adds (RSS after - before, after a
warm-up build on a small source of the same kind has loaded the imports; it includes memory the allocator keeps
from the build's temporaries), the bytes the built dataset holds (its index arrays) per record, and the build time.
Sources:
- `parquet`: a caption parquet file of N rows (image path + an ~80-character caption), indexed by row groups.
- `webdataset`: real tar shards of 10k samples each (tiny JPEG + caption + json members) up to 100k samples; above
  that, a synthetic N-row index (the real shard's index tiled, so every record is readable), since writing
  millions of tar members is not worth the disk.
- `before`: what the previous loader kept for webdataset shards, every image's bytes (N x 76 kB, CC12M's average
  JPEG size in the issue), and, measured, the parquet rows it materialised as Python dicts.

    python scripts/bench_data_memory.py                 # prints the table (about a minute)
    python scripts/bench_data_memory.py --max 1000000   # a smaller top row
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

SIZES = (10_000, 100_000, 1_000_000, 3_000_000)
SHARD = 10_000
CC12M_JPEG_BYTES = 76_000


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def make_parquet(path: Path, n: int, image: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    caption = "a photograph of a small red square on a plain grey background, taken in a studio, number "
    with pq.ParquetWriter(path, pa.schema([("image", pa.string()), ("caption", pa.string())])) as w:
        for start in range(0, n, 100_000):
            m = min(100_000, n - start)
            w.write_table(pa.table({"image": [image] * m, "caption": [f"{caption}{start + i}" for i in range(m)]}),
                          row_group_size=10_000)


def make_shards(folder: Path, n: int) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (28, 28), (200, 30, 30)).save(buf, format="JPEG")
    jpg = buf.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(0, n, SHARD):
        with tarfile.open(folder / f"{s // SHARD:05d}.tar", "w") as tar:
            for i in range(s, min(n, s + SHARD)):
                for suffix, data in (("jpg", jpg), ("txt", f"caption {i}".encode()),
                                     ("json", json.dumps({"url": f"https://example.com/{i}.jpg"}).encode())):
                    info = tarfile.TarInfo(f"{i:09d}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def child(kind: str, n: int, data: str, warm: str) -> None:
    """Build a one-source mixture of `n` records in this process and print its memory as JSON."""
    import numpy as np

    from vamba.data import mixture
    from vamba.data.annotations import TarRecords, read_annotations
    from vamba.data.processor import VambaProcessor

    proc = VambaProcessor.tiny(patch_size=14)
    if kind == "before":  # the previous caption-parquet reader: every row as a dict
        import pyarrow.parquet as pq

        base = rss_mb()
        rows = pq.read_table(data).to_pylist()
        print(json.dumps({"mb": rss_mb() - base, "records": len(rows)}))
        return
    fmt = "caption" if kind == "parquet" else "webdataset"
    mixture.build_mixture(mixture.MixtureConfig(sources=[mixture.SourceConfig(name="warm", format=fmt,
                                                                              annotation=warm)]), proc)
    synthetic = kind == "webdataset" and n > 100_000
    if synthetic:  # tile the real 10k-sample shard's index to n rows
        real = read_annotations("webdataset", data)
        reps = -(-n // len(real))
        mixture.read_annotations = lambda *a, **k: _tiled(real, reps, n, TarRecords, np)
    base, t0 = rss_mb(), time.perf_counter()
    cfg = mixture.MixtureConfig(sources=[mixture.SourceConfig(name=kind, format=fmt, annotation=data)])
    ds = mixture.build_mixture(cfg, proc)
    seconds = time.perf_counter() - t0
    index, (_, source) = ds.records, ds.records.sources[0]
    held = index.rows.nbytes + index.source_ids.nbytes + sum(
        getattr(source, a).nbytes for a in ("members", "keys", "starts", "groups") if hasattr(source, a))
    print(json.dumps({"mb": rss_mb() - base, "held": held, "records": len(ds), "seconds": seconds,
                      "synthetic": synthetic}))


def _tiled(real, reps, n, cls, np):
    out = cls.__new__(cls)
    out.shards, out.members, out.keys = real.shards, np.tile(real.members, (reps, 1))[:n], np.tile(real.keys, reps)[:n]
    return out


def run_child(kind: str, n: int, data: Path, warm: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(n), str(data), str(warm)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=3_000_000)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2], args.child[3])
        return
    from PIL import Image

    sizes = [n for n in SIZES if n <= args.max]
    print(f"{'records':>10} | {'parquet RSS MB':>14} {'held B/rec':>10} {'s':>5} | {'webdataset RSS MB':>17} "
          f"{'held B/rec':>10} {'s':>5} | {'before: parquet dicts MB':>24} | {'before: wds image bytes GB':>26}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        Image.new("RGB", (28, 28), (200, 30, 30)).save(tmp / "img.png")
        make_shards(tmp / "shards_small", SHARD)
        make_parquet(tmp / "warm.parquet", 1000, str(tmp / "img.png"))
        for n in sizes:
            pq_file = tmp / f"captions_{n}.parquet"
            make_parquet(pq_file, n, str(tmp / "img.png"))
            if n <= 100_000:
                make_shards(tmp / f"shards_{n}", n)
            par = run_child("parquet", n, pq_file, tmp / "warm.parquet")
            wds = run_child("webdataset", n, tmp / (f"shards_{n}" if n <= 100_000 else "shards_small"),
                            tmp / "shards_small")
            old = run_child("before", n, pq_file, pq_file)["mb"] if n <= 1_000_000 else None
            pq_file.unlink()
            print(f"{n:>10,} | {par['mb']:>14.1f} {par['held'] / n:>10.1f} {par['seconds']:>5.1f} | "
                  f"{wds['mb']:>17.1f} {wds['held'] / n:>10.1f} {wds['seconds']:>5.1f}"
                  f"{'*' if wds['synthetic'] else ' '}| {'not run' if old is None else f'{old:.0f}':>24} | "
                  f"{n * CC12M_JPEG_BYTES / 1e9:>26.1f}")
    print("* synthetic index (the real 10k-sample shard's index tiled); other webdataset rows scan real shards")


if __name__ == "__main__":
    main()
