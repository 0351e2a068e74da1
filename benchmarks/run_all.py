"""`make bench`: every benchmark in benchmarks/, one after the other, each in its own process.

Each benchmark prints its table and writes its JSON to benchmarks/results/ (the tables of
benchmarks/README.md are copied from there, with the machine they ran on). Run them on an
idle machine: they compare against LightlySSL in the same run, as ratios, but a busy core
still skews a ratio.

Usage: python benchmarks/run_all.py [--only NAME[,NAME]] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> (script, arguments of a --quick run; "{out}" is a temporary JSON path)
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "shards": ("shards.py", ["--n", "300", "--out", "{out}"]),
    "loaders": ("loaders.py", ["--images", "300", "--batches", "5", "--out", "{out}"]),
    "loss_kernels": ("loss_kernels.py", ["--quick", "--out", "{out}"]),
    "update_momentum": ("update_momentum.py", ["--runs", "10", "--out", "{out}"]),
    "pretrain_epoch": ("pretrain_epoch.py", ["--n", "1000", "--out", "{out}"]),
    "small_conv": (
        "small_conv.py",
        ["--reps", "1", "--steps", "1", "--repeats", "1", "--batch", "32", "--out", "{out}"],
    ),
    "compile_cpu": (
        "compile_cpu.py",
        ["--steps", "3", "--rounds", "1", "--set", "data.batch_size=32", "--out", "{out}"],
    ),
    "fashion_mnist_accuracy": (
        "fashion_mnist_accuracy.py",
        ["--train", "600", "--test", "100", "--epochs", "1", "--out", "{out}"],
    ),
    # Every method's recipe for 10 epochs beside its baselines: hours on a CPU.
    "methods_fashion_mnist": (
        "methods_fashion_mnist.py",
        [
            "--methods",
            "simclr",
            "--epochs",
            "1",
            "--train",
            "600",
            "--test",
            "100",
            "--baselines",
            "random,pixels",
            "--out",
            "{out}",
        ],
    ),
    # LightlySSL's own examples beside the recipes, same data and epochs: about an hour.
    "lightly_examples_fashion_mnist": (
        "lightly_examples_fashion_mnist.py",
        [
            "--methods",
            "simclr",
            "--epochs",
            "1",
            "--train",
            "600",
            "--test",
            "100",
            "--out",
            "{out}",
        ],
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Runs the benchmarks of benchmarks/.")
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of: {', '.join(BENCHMARKS)} (default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, to check that the benchmarks run (results are not comparable; "
        "they are written to a temporary folder, not benchmarks/results/)",
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}: choose from {', '.join(BENCHMARKS)}")
    failed = []
    tmp = tempfile.mkdtemp(prefix="fastssl-bench-quick-") if args.quick else ""
    for name in names:
        script, quick = BENCHMARKS[name]
        out = os.path.join(tmp, f"{name}.json")
        extra = [a.replace("{out}", out) for a in quick] if args.quick else []
        print(f"== {name}: python benchmarks/{script} {' '.join(extra)}", flush=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(HERE / script), *extra])
        print(f"== {name}: exit {done.returncode} after {time.perf_counter() - start:.0f} s\n")
        if done.returncode != 0:
            failed.append(name)
    if args.quick:
        print(f"quick-run results (not comparable) are in {tmp}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
