"""Conversion speed of ``fastssl shards`` against the floor of copying bytes into a tar.

Builds an ImageNet-like folder (N JPEGs of 500x375, /work/shared/data/make_photo_folder.py,
needs scikit-learn), then times, in one run:

* ``tar floor``: the same files appended to one tar with ``tarfile`` (no decode), the
  least any converter must do;
* ``copy``: ``fastssl shards`` keeping the original bytes (every image decoded to verify);
* ``max-side 256``: ``fastssl shards --max-side 256`` (decode, shrink, re-encode).

Prints a table and writes benchmarks/results/shards.json.

Usage: python benchmarks/shards.py [--n 2000] [--workers 2] [--make-folder PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastssl.data.shards import ShardSettings, convert  # noqa: E402

MAKE_FOLDER = "/work/shared/data/make_photo_folder.py"


def tar_floor(src: Path, out: Path) -> int:
    """Appends every file under src to one tar; returns the file count."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    with tarfile.open(out, "w") as archive:
        for path in files:
            archive.add(path, arcname=str(path.relative_to(src)))
    return len(files)


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images in the folder")
    parser.add_argument("--workers", type=int, default=2, help="fastssl shards --workers")
    parser.add_argument("--make-folder", default=MAKE_FOLDER, help="folder generator script")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/shards.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fastssl-shards-bench-"))
    try:
        src = work / "src"
        subprocess.run([sys.executable, args.make_folder, str(args.n), str(src)], check=True)
        size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        rows = []
        seconds, count = timed(lambda: tar_floor(src, work / "floor.tar"))
        rows.append(("tar floor (tarfile, no decode)", seconds, count))
        for label, max_side in (
            ("fastssl shards (copy)", None),
            ("fastssl shards --max-side 256", 256),
        ):
            settings = ShardSettings(max_count=1000, max_side=max_side)
            dst = work / f"dst-{max_side}"
            seconds, manifest = timed(lambda s=settings, d=dst: convert(src, d, s, args.workers))
            rows.append((label, seconds, manifest["num_samples"]))
        results = {
            "n": args.n,
            "workers": args.workers,
            "source_mb": round(size / 1e6, 1),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "rows": [
                {"mode": m, "seconds": round(s, 3), "images_per_s": round(c / s, 1)}
                for m, s, c in rows
            ],
        }
        print(f"\n{args.n} JPEGs 500x375 ({size / 1e6:.1f} MB), --workers {args.workers}")
        print(f"{'mode':<34}{'seconds':>10}{'images/s':>12}")
        for row in results["rows"]:
            print(f"{row['mode']:<34}{row['seconds']:>10.2f}{row['images_per_s']:>12.1f}")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
