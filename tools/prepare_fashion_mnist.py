"""Writes Fashion-MNIST (from Debian's ``dataset-fashion-mnist`` package) as image folders.

Output: ``OUT/train/<class>/<index>.png`` and ``OUT/test/<class>/<index>.png``, 28x28
grayscale PNGs, with the class names of the dataset. Nothing is downloaded.

Usage:
    python tools/prepare_fashion_mnist.py OUT [--train N] [--test N] [--seed S | --first]
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)  # fmt: skip


def read_idx(path: Path) -> np.ndarray:
    """Reads a gzipped IDX file (the MNIST format) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_split(source: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """The images (N, 28, 28) and labels (N,) of one split: ``prefix`` is "train" or "t10k"."""
    return (
        read_idx(source / f"{prefix}-images-idx3-ubyte.gz"),
        read_idx(source / f"{prefix}-labels-idx1-ubyte.gz"),
    )


def subset(total: int, count: int, seed: int | None) -> np.ndarray:
    """Indices of ``count`` of ``total`` images: the first ones of the dataset's order when
    ``seed`` is None, else a seeded random subset."""
    if seed is None:
        return np.arange(count)
    return np.random.default_rng(seed).permutation(total)[:count]


def write_split(
    images: np.ndarray, labels: np.ndarray, out: Path, count: int, seed: int | None
) -> int:
    """Writes the ``subset(len(images), count, seed)`` images; returns how many were written."""
    order = subset(len(images), count, seed)
    for name in CLASSES:
        (out / name).mkdir(parents=True, exist_ok=True)
    for index in order:
        path = out / CLASSES[labels[index]] / f"{index:05d}.png"
        if not path.exists():
            Image.fromarray(images[index], mode="L").save(path)
    return len(order)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder (gets train/ and test/)")
    parser.add_argument(
        "--source", type=Path, default=DEFAULT_SOURCE, help="IDX folder (default: %(default)s)"
    )
    parser.add_argument(
        "--train", type=int, default=10_000, help="training images (default: %(default)s)"
    )
    parser.add_argument(
        "--test", type=int, default=2_000, help="test images (default: %(default)s)"
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--seed", type=int, default=0, help="seed of the random subset (default: %(default)s)"
    )
    choice.add_argument(
        "--first",
        action="store_true",
        help="take the first N images of each split (the dataset's own order) instead of "
        "a seeded random subset",
    )
    args = parser.parse_args(argv)
    if not (args.source / "train-images-idx3-ubyte.gz").exists():
        print(
            f"error: Fashion-MNIST not found in {args.source}; install it with "
            "`apt-get install dataset-fashion-mnist` or pass --source",
            file=sys.stderr,
        )
        return 2
    for split, prefix, count in (("train", "train", args.train), ("test", "t10k", args.test)):
        images, labels = read_split(args.source, prefix)
        if not 0 < count <= len(images):
            print(f"error: --{split} must be in 1..{len(images)}, got {count}", file=sys.stderr)
            return 2
        n = write_split(images, labels, args.out / split, count, None if args.first else args.seed)
        print(f"{split}: {n} images in {args.out / split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
