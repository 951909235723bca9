"""Prepare the paper's stage-1 data: CC12M images with PixelProse captions, paired by image URL.

Published CC12M webdataset shards (e.g. pixparse/cc12m-wds, written by img2dataset) hold `<key>.jpg`, `<key>.txt`
(the CC12M alt-text) and `<key>.json` (with the image `url`); PixelProse (tomg-group-umd/pixelprose) is parquet
with `url` and `vlm_caption` and no images. Training on the shards as published trains on alt-text; the paper
trains on PixelProse captions. `pixelprose` writes shards of the same names to `--out` holding, for every image
whose URL PixelProse captions, the image, its PixelProse caption as `.txt` and the original `.json`; images
without a PixelProse caption are dropped and counted:

    python -m vamba.data.prepare pixelprose --parquet /data/pixelprose/data/vlm_captions_cc12m_*.parquet \\
        --shards /data/cc12m-wds --out /data/cc12m_pixelprose/shards

Memory: 8 bytes per shard image (URL hashes) plus one parquet batch; matched captions wait in an SQLite file in
`--out`. Each shard and the report (`pixelprose_join.json`: matched / unmatched, per shard and in all) are written
atomically, so an interrupted run leaves whole shards only.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sqlite3
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .annotations import AnnotationError, find_files, tar_samples

REPORT = "pixelprose_join.json"


def url_hash(url: str) -> int:
    """64-bit hash of an image URL (exact string match, as both datasets copy CC12M's URL list)."""
    return int.from_bytes(hashlib.blake2b(url.encode(), digest_size=8).digest(), "little", signed=True)


def _read(f, member: tuple[str, int, int]) -> bytes:
    f.seek(member[1])
    return f.read(member[2])


def _url(f, members: dict[str, tuple[str, int, int]]) -> str | None:
    if "json" not in members:
        return None
    try:
        return json.loads(_read(f, members["json"])).get("url")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise AnnotationError(f"{f.name}: {members['json'][0]} is not a JSON object ({e})") from None


def join_pixelprose(parquets: Sequence[str], shards: Sequence[str], out: str | Path, url_column: str = "url",
                    caption_column: str = "vlm_caption") -> dict[str, Any]:
    """Write `out/<shard>` with PixelProse captions for the images whose URL PixelProse has; returns the report."""
    import pyarrow.parquet as pq

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tars = [f for s in shards for f in find_files(s, ".tar")]
    wanted = []
    for shard in tars:
        with open(shard, "rb") as f:
            wanted += [url_hash(u) for _, members in tar_samples(shard) if (u := _url(f, members))]
    wanted = np.unique(np.array(wanted, dtype=np.int64))
    db_path = out / ".pixelprose_join.sqlite"
    db_path.unlink(missing_ok=True)
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE caption (h INTEGER PRIMARY KEY, text TEXT)")
    rows = 0
    for path in (f for p in parquets for f in find_files(p, ".parquet")):
        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=65536, columns=[url_column, caption_column])
            for batch in batches:
                urls, texts = batch.column(0).to_pylist(), batch.column(1).to_pylist()
                hashes = np.array([url_hash(u) if u else 0 for u in urls], dtype=np.int64)
                keep = np.flatnonzero(np.isin(hashes, wanted))
                db.executemany("INSERT OR IGNORE INTO caption VALUES (?, ?)",
                               [(int(hashes[i]), texts[i]) for i in keep if (texts[i] or "").strip()])
                rows += len(urls)
        except (OSError, ValueError, KeyError) as e:  # pyarrow: ArrowInvalid (a ValueError), missing columns
            raise AnnotationError(f"{path}: cannot read columns {url_column!r}, {caption_column!r} ({e})") from None
    report: dict[str, Any] = {"pixelprose_rows": rows, "matched": 0, "unmatched": 0, "shards": {}}
    for shard in tars:
        counts = {"matched": 0, "unmatched": 0}
        tmp = out / f".{shard.name}.tmp"
        with open(shard, "rb") as src, tarfile.open(tmp, "w") as dst:
            for key, members in tar_samples(shard):
                url = _url(src, members)
                found = db.execute("SELECT text FROM caption WHERE h = ?", (url_hash(url),)).fetchone() if url else None
                counts["matched" if found else "unmatched"] += 1
                if not found:
                    continue
                files = [(m[0], _read(src, m)) for kind, m in members.items() if kind != "txt"]
                for name, data in [*files, (f"{key}.txt", found[0].strip().encode())]:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    dst.addfile(info, io.BytesIO(data))
        os.replace(tmp, out / shard.name)
        report["shards"][shard.name] = counts
        report["matched"] += counts["matched"]
        report["unmatched"] += counts["unmatched"]
    db.close()
    db_path.unlink()
    tmp = out / f".{REPORT}.tmp"
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, out / REPORT)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vamba.data.prepare", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="dataset", required=True)
    pp = sub.add_parser("pixelprose", help="CC12M webdataset shards with PixelProse captions (the paper's stage 1)")
    pp.add_argument("--parquet", nargs="+", required=True, help="PixelProse parquet files, folders or globs")
    pp.add_argument("--shards", nargs="+", required=True, help="CC12M webdataset shards, folders or globs")
    pp.add_argument("--out", required=True, help="folder for the captioned shards and pixelprose_join.json")
    pp.add_argument("--url-column", default="url")
    pp.add_argument("--caption-column", default="vlm_caption")
    args = parser.parse_args(argv)
    r = join_pixelprose(args.parquet, args.shards, args.out, args.url_column, args.caption_column)
    total = r["matched"] + r["unmatched"]
    print(f"pixelprose join: {r['matched']} of {total} images matched ({100 * r['matched'] / max(total, 1):.1f}%), "
          f"{r['unmatched']} without a PixelProse caption dropped; {r['pixelprose_rows']} PixelProse rows read; "
          f"{len(r['shards'])} shards in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
