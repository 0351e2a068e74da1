"""Convolutions with tiny outputs: oneDNN (what PyTorch and so LightlySSL run) against
fastssl's matrix products (``fastssl.models.small_conv``), on the CPU.

Two tables, float32 and (where the CPU computes it natively) bfloat16 autocast:

* every convolution shape of a ResNet-18 at 32 px from layer2 on (batch 512: SimCLR's two
  views of 256 images; channels_last), forward + backward, ``F.conv2d`` against
  ``conv2d_as_matmul``; the matmul path runs in training only where the output has at
  most 4 positions (``max_positions``), the larger shapes show why;
* the whole SimCLR training step of the Fashion-MNIST recipe
  (``pipelines/fashion_mnist/simclr.yaml``: ``timm:resnet18``, projection head, NT-Xent,
  LARS, batch 256), ``fastssl profile --compute-only`` in a fresh process each time, with
  ``trainer.matmul_small_convs`` off (every convolution in oneDNN, as in LightlySSL) and
  on (fastssl's default on CPUs), alternating, ``--repeats`` processes each, the best
  shown (timed in one interpreter after the other settings, oneDNN's bf16 step read 1.5x
  faster than in a fresh process, so each setting gets its own, as a user's run does).

A shape's figure is the median of ``--reps`` timed runs after two warm-up runs. Prints the
tables and writes JSON to --out.

Usage: python benchmarks/small_conv.py [--data FOLDER] [--reps 7] [--steps 8] [--repeats 3]
    [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pretrain_epoch import write_report  # noqa: E402

from fastssl.models.small_conv import DEFAULT_MAX_POSITIONS, conv2d_as_matmul, output_positions  # noqa: E402
from fastssl.train.engine import cpu_supports  # noqa: E402

# (in, out, map, kernel, stride, padding): ResNet-18's convolutions at 32 px, layer2 on.
SHAPES = [
    (64, 128, 8, 3, 2, 1),
    (128, 128, 4, 3, 1, 1),
    (128, 256, 4, 3, 2, 1),
    (128, 256, 4, 1, 2, 0),
    (256, 256, 2, 3, 1, 1),
    (256, 512, 2, 3, 2, 1),
    (256, 512, 2, 1, 2, 0),
    (512, 512, 1, 3, 1, 1),
]
RECIPE = ROOT / "pipelines" / "fashion_mnist" / "simclr.yaml"


def median_ms(fn: Callable[[], object], reps: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def time_shape(
    shape: tuple[int, int, int, int, int, int], bf16: bool, reps: int, batch: int
) -> tuple[float, float]:
    """Median ms of forward + backward of one convolution: (oneDNN, matmuls)."""
    cin, cout, size, k, stride, pad = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cin, size, size, generator=g)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(cout, cin, k, k, generator=g).requires_grad_()

    def run(conv: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = conv()
            y.float().sum().backward()

        return step

    onednn = median_ms(run(lambda: F.conv2d(x, w, None, stride, pad)), reps)
    matmul = median_ms(run(lambda: conv2d_as_matmul(x, w, None, (stride,) * 2, (pad,) * 2)), reps)
    return onednn, matmul


def bench_shapes(precision: str, reps: int, batch: int) -> list[dict]:
    rows = []
    for shape in SHAPES:
        cin, cout, size, k, stride, pad = shape
        onednn, matmul = time_shape(shape, precision == "bf16-mixed", reps, batch)
        positions = output_positions((size, size), (k, k), (stride, stride), (pad, pad))
        rows.append(
            {
                "precision": precision,
                "conv": f"{cin}->{cout} {k}x{k}/{stride} on {size}x{size}",
                "output_positions": positions,
                "used_in_training": positions <= DEFAULT_MAX_POSITIONS,
                "onednn_ms": round(onednn, 2),
                "matmul_ms": round(matmul, 2),
                "speedup": round(onednn / matmul, 2),
            }
        )
    return rows


def random_folder(root: Path, n: int = 8) -> Path:
    """``n`` random 28 px grayscale PNGs in ``root``/images (only their shapes matter)."""
    folder = root / "images"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def profile_compute(precision: str, on: bool, steps: int, data: Path) -> dict:
    """``fastssl profile --compute-only`` of the recipe in a fresh process: its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.json"
        command = [
            sys.executable, "-m", "fastssl", "profile", str(RECIPE), "--data", str(data),
            "--compute-only", "--variants", "none", "--steps", str(steps),
            "--precision", precision, "--set", f"trainer.matmul_small_convs={str(on).lower()}",
            "--out", tmp, "--json", str(out),
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
        return json.loads(out.read_text())


def bench_step(precision: str, steps: int, repeats: int, data: Path) -> list[dict]:
    """The recipe's step with the matmul path off and on, alternating, ``repeats`` times."""
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(repeats):
        for on in (False, True):
            runs[on].append(profile_compute(precision, on, steps, data)["compute"]["current"])
    rows = []
    for on, results in runs.items():
        best = max(results, key=lambda r: r["images_per_s"])
        rows.append(
            {
                "precision": precision,
                "run": "fastssl matmul_small_convs" if on else "oneDNN (as LightlySSL)",
                "images_per_s_runs": [round(r["images_per_s"], 1) for r in results],
                "step_ms": round(best["step_ms_median"], 1),
                "images_per_s": round(best["images_per_s"], 1),
                "stages_ms": {k: round(v, 1) for k, v in best["stages_ms"].items()},
            }
        )
    base = rows[0]["step_ms"]
    for row in rows:
        row["speedup"] = round(base / row["step_ms"], 2)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="timed runs per shape (median)")
    parser.add_argument("--steps", type=int, default=8, help="timed SimCLR steps per process")
    parser.add_argument(
        "--repeats", type=int, default=3, help="processes per step setting (the best is shown)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="an image folder for the profiler (--compute-only reads only the view shapes "
        "from the recipe; default: a few random 28 px images in a temporary folder)",
    )
    parser.add_argument("--batch", type=int, default=512, help="images per convolution call")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "small_conv.json"
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()
    if args.data is None:
        args.data = random_folder(Path(tempfile.mkdtemp(prefix="fastssl-small-conv-")))
    precisions = ["32-true"] + (["bf16-mixed"] if cpu_supports(torch.bfloat16) else [])
    shapes, steps = [], []
    for precision in precisions:
        shapes += bench_shapes(precision, args.reps, args.batch)
        steps += bench_step(precision, args.steps, args.repeats, args.data)
    header = ("precision", "convolution", "pos", "oneDNN ms", "matmul ms", "x")
    print("{:<11} {:<28} {:>4} {:>10} {:>10} {:>6}".format(*header))
    for r in shapes:
        mark = "" if r["used_in_training"] else "  (oneDNN in training)"
        print(
            f"{r['precision']:<11} {r['conv']:<28} {r['output_positions']:>4} "
            f"{r['onednn_ms']:>10.1f} {r['matmul_ms']:>10.1f} {r['speedup']:>6.2f}{mark}"
        )
    header = ("precision", "SimCLR step, Fashion-MNIST recipe", "ms", "images/s", "x")
    print("\n{:<11} {:<36} {:>8} {:>9} {:>6}".format(*header))
    for r in steps:
        print(
            f"{r['precision']:<11} {r['run']:<36} {r['step_ms']:>8.1f} "
            f"{r['images_per_s']:>9.1f} {r['speedup']:>6.2f}"
        )
    setup = {"batch": args.batch, "reps": args.reps, "steps": args.steps, "data": str(args.data)}
    write_report(str(args.out), setup, {"shapes": shapes, "steps": steps}, (load, os.getloadavg()))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
