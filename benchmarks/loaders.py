"""Data loaders side by side: LightlySSL 1.6 vs fastssl's torch, DALI and FFCV backends.

All contenders load the same ImageNet-like JPEG folder (``make_photo_folder.py``: ~500x375,
quality 90) into SimCLR's two 224 px views, batch 64, on the same CPU budget:

* ``peer``: lightly 1.6 ``LightlyDataset`` + ``SimCLRTransform`` + ``DataLoader(num_workers=2)``;
* ``torch_folder`` / ``torch_shards``: ``make_loader(backend="torch", num_workers=2)`` over the
  folder / its ``fastssl shards`` WebDataset output, on the batched engine (crop while
  decoding, color and blur after collation: ``fastssl.data.engines.batched``);
* ``torch_per_sample``: the same over the folder with ``batched=False``: the torchvision v2
  pipeline on every sample (the torch backend before the batched engine);
* ``torch_http``: ``torch_shards`` read over HTTP: the same tars served by
  ``python -m http.server`` on 127.0.0.1 and passed to ``make_loader`` as URLs (WebDataset's
  ``gopen``, curl), to compare remote with local reading;
* ``dali_folder`` / ``dali_shards``: ``make_loader(backend="dali")``, DALI CPU, 2 threads;
* ``ffcv``: ``make_loader(backend="ffcv", num_workers=2)`` over the folder converted with
  ``fastssl shards --format ffcv`` (JPEG q90): FFCV reads and decodes each image once and
  makes both views in its numba-compiled decoder (``fastssl.data.engines.ffcv``), 2 threads;
* ``decode_ceiling``: Pillow decoding the same files on 2 processes, nothing else.

Each contender runs in its own subprocess (so none inherits another's threads) and is timed
over ``--batches`` batches after ``--warmup`` batches. With ``--repeats R`` the contenders
run R times in turn and each keeps its fastest run (other work on the machine slows single
runs; every run and its load average is kept in the JSON). Prints images/s, the ratio to
the peer and the fraction of the decode ceiling; writes ``benchmarks/results/loaders.json``.

Usage::

    python benchmarks/loaders.py                 # 1000 images in /tmp/fastssl-bench-photos
    python benchmarks/loaders.py --images 300 --batches 4   # quick
    python benchmarks/loaders.py --repeats 2                # best of two runs each
    python benchmarks/loaders.py --contenders torch_shards,torch_http --repeats 3
    python benchmarks/loaders.py --images 2000 --contenders peer,torch_shards,dali_shards,ffcv
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "loaders.json"
MAKE_PHOTOS = Path("/work/shared/data/make_photo_folder.py")
BATCH = 64
WORKERS = 2
CONTENDERS = (
    "peer",
    "torch_folder",
    "torch_shards",
    "torch_http",
    "torch_per_sample",
    "dali_folder",
    "dali_shards",
    "ffcv",
)
# fastssl contenders: (backend, source, batched engine)
FASTSSL: dict[str, tuple[str, str, bool | None]] = {
    "torch_folder": ("torch", "folder", True),
    "torch_shards": ("torch", "shards", True),
    "torch_http": ("torch", "http", True),
    "torch_per_sample": ("torch", "folder", False),
    "dali_folder": ("dali", "folder", None),
    "dali_shards": ("dali", "shards", None),
    "ffcv": ("ffcv", "beton", None),
}


def _prepare(images: int, root: Path, beton: bool = False) -> tuple[Path, Path]:
    """The photo folder and its shards (and, with ``beton``, its ``.beton`` beside them)."""
    from fastssl.data.shards import ShardSettings, convert

    folder, shards = root / f"photos-{images}", root / f"shards-{images}"
    if not folder.exists():
        subprocess.run([sys.executable, str(MAKE_PHOTOS), str(images), str(folder)], check=True)
    if not (shards / "manifest.json").exists():
        convert(folder, shards, ShardSettings(max_count=250), workers=WORKERS)
    if beton and not (_beton(shards) / "manifest.json").exists():
        convert(folder, _beton(shards), ShardSettings(format="ffcv"), workers=WORKERS)
    return folder, shards


def _beton(shards: Path) -> Path:
    """The ``fastssl shards --format ffcv`` output of the same photos."""
    return shards.with_name(shards.name.replace("shards", "beton"))


def _shard_urls(shards: Path, base: str) -> list[str]:
    """The URLs of a ``fastssl shards`` folder's tars under an HTTP server's ``base``."""
    manifest = json.loads((shards / "manifest.json").read_text())
    return [f"{base}/{entry['file']}" for entry in manifest["shards"]]


def _serve(shards: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m http.server`` over ``shards`` on a free loopback port."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    server = subprocess.Popen(
        command, cwd=shards, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(200):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def _loader(name: str, folder: Path, shards: Path, http_base: str = "") -> Any:
    import torch

    if name == "peer":
        from lightly.data import LightlyDataset
        from lightly.data.multi_view_collate import MultiViewCollate
        from lightly.transforms import SimCLRTransform

        dataset = LightlyDataset(str(folder), transform=SimCLRTransform(input_size=224))
        batches = torch.utils.data.DataLoader(
            dataset,
            batch_size=BATCH,
            shuffle=True,
            num_workers=WORKERS,
            collate_fn=MultiViewCollate(),
            drop_last=True,
            persistent_workers=True,
        )

        class Epochs:
            def __iter__(self) -> Any:
                return iter(batches)

            def __len__(self) -> int:
                return len(batches)

            def set_epoch(self, epoch: int) -> None:
                pass

        return Epochs()
    from fastssl.data.loader import make_loader
    from fastssl.transforms.simclr_transform import SimCLRTransform

    backend, source, batched = FASTSSL[name]
    data: Any = {"folder": folder, "shards": shards, "beton": _beton(shards)}.get(source)
    if source == "http":
        data = _shard_urls(shards, http_base)
    return make_loader(
        data,
        SimCLRTransform(input_size=224),
        backend=backend,  # type: ignore[arg-type]
        batch_size=BATCH,
        num_workers=WORKERS,
        **({} if batched is None else {"batched": batched}),
    )


def _decode(path: str) -> int:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB").size[0]


def _measure(
    name: str, folder: Path, shards: Path, batches: int, warmup: int, http_base: str = ""
) -> dict[str, Any]:
    if name == "decode_ceiling":
        from multiprocessing import Pool

        files = sorted(str(p) for p in folder.rglob("*.jpg"))
        with Pool(WORKERS) as pool:
            pool.map(_decode, files[:64], chunksize=8)  # warm the workers
            start = time.perf_counter()
            pool.map(_decode, files, chunksize=16)
            seconds = time.perf_counter() - start
        return {"images_per_s": len(files) / seconds, "images": len(files), "seconds": seconds}
    from fastssl.profile.cli import measure_loader

    loader = _loader(name, folder, shards, http_base)
    images, seconds, _ = measure_loader(loader, batches, warmup)
    return {"images_per_s": images / seconds, "images": images, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--root", default="/tmp/fastssl-bench")
    parser.add_argument("--batches", type=int, default=20, help="measured batches of 64")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="runs per contender (best kept)")
    parser.add_argument(
        "--contenders", default=",".join(CONTENDERS), help="comma-separated subset to run"
    )
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)  # child process
    parser.add_argument("--http-base", default="", help=argparse.SUPPRESS)  # child process
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output path")
    args = parser.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    chosen = [name for name in args.contenders.split(",") if name]
    folder, shards = _prepare(args.images, root, beton="ffcv" in chosen or args.only == "ffcv")
    if args.only:
        result = _measure(args.only, folder, shards, args.batches, args.warmup, args.http_base)
        print("RESULT " + json.dumps(result))
        return
    unknown = sorted(set(chosen) - set(CONTENDERS))
    if unknown:
        parser.error(f"unknown contenders {unknown}: choose from {', '.join(CONTENDERS)}")
    server, http_base = _serve(shards) if "torch_http" in chosen else (None, "")
    runs: dict[str, list[dict[str, Any]]] = {}
    for _ in range(max(args.repeats, 1)):
        for name in ("decode_ceiling", *chosen):
            command = [sys.executable, __file__, "--only", name, "--images", str(args.images)]
            command += ["--root", args.root, "--batches", str(args.batches)]
            command += ["--warmup", str(args.warmup), "--http-base", http_base]
            load_before = os.getloadavg()[0]
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                result: dict[str, Any] = {"error": done.stderr.strip().splitlines()[-1:]}
            else:
                result = json.loads(line[len("RESULT ") :])
            result["load_average_1min_before"] = load_before
            runs.setdefault(name, []).append(result)
            print(f"{name}: {result}", flush=True)
    if server is not None:
        server.terminate()
        server.wait(10)
    results: dict[str, Any] = {}
    for name, tries in runs.items():
        best = max(tries, key=lambda r: r.get("images_per_s", -1.0))
        results[name] = {**best, "runs_images_per_s": [r.get("images_per_s") for r in tries]}
    peer = results.get("peer", {}).get("images_per_s")
    ceiling = results["decode_ceiling"].get("images_per_s")
    print(f"\n{'loader':<16} {'images/s':>9} {'x peer':>7} {'of decode':>10}")
    for name, result in results.items():
        speed = result.get("images_per_s")
        if speed is None:
            print(f"{name:<16} {'-':>9}  {result.get('skipped') or result.get('error')}")
            continue
        ratio = f"{speed / peer:.2f}" if peer else "-"
        share = f"{speed / ceiling:.0%}" if ceiling else "-"
        result.update({"x_peer": speed / peer if peer else None})
        result.update({"fraction_of_decode": speed / ceiling if ceiling else None})
        print(f"{name:<16} {speed:>9.1f} {ratio:>7} {share:>10}")
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\nmachine: {os.cpu_count()} cpus; {uptime}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "setup": {
            "images": args.images,
            "image_size": "500x375 / 375x500 JPEG q90",
            "views": "SimCLR 2 x 224",
            "batch_size": BATCH,
            "workers_or_threads": WORKERS,
            "measured_batches": args.batches,
            "warmup_batches": args.warmup,
            "repeats": args.repeats,
            "fastssl_torch_engine": "batched, "
            + ("numba kernels" if importlib.util.find_spec("numba") else "torch ops")
            + "; torch_per_sample: torchvision v2 per sample",
            "kept": "the fastest of the repeats, per contender",
            "contenders": chosen,
        },
        "machine": {"cpus": os.cpu_count(), "uptime": uptime},
        "results": results,
    }
    local, remote = (results.get(n, {}).get("images_per_s") for n in ("torch_shards", "torch_http"))
    if local and remote:
        report["http_vs_local"] = remote / local
        print(f"HTTP reading at {remote / local:.2f}x the speed of local reading")
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
