"""How much the choice of the 10,000 / 2,000 Fashion-MNIST images moves the kNN score.

Scores the raw-pixel baseline (weighted kNN, k=200, t=0.1, `fastssl.eval.knn`) on the
subsets `tools/prepare_fashion_mnist.py` writes: the first N images of each split
(`--first`) and seeded random subsets (`--seed S`), with the pixels as `fastssl eval knn
--checkpoint pixels --input-size 32` sees them (resized to 32 px, ImageNet normalisation)
and as raw 28 px intensities in [0, 1]. Takes seconds; reads Debian's
`dataset-fashion-mnist`. See benchmarks/fashion_mnist.md ("Fifth round").

Usage:
    python benchmarks/fashion_mnist_splits.py [--seeds 0 1 2 3] [--json F]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastssl.eval.features import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from fastssl.eval.knn import knn_accuracy  # noqa: E402

_spec = importlib.util.spec_from_file_location("prep", ROOT / "tools/prepare_fashion_mnist.py")
assert _spec is not None and _spec.loader is not None
prep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prep)

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def pixels(images: torch.Tensor, view: str) -> torch.Tensor:
    """(N, 28, 28) uint8 images -> (N, D) features: 'raw28' or 'eval32' (the eval's view)."""
    x = images.float().div(255)
    if view == "raw28":
        return x.flatten(1)
    x = F.interpolate(x[:, None], size=32, mode="bilinear", antialias=True, align_corners=False)
    return ((x.repeat(1, 3, 1, 1) - MEAN) / STD).flatten(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=prep.DEFAULT_SOURCE, help="IDX folder")
    parser.add_argument("--train", type=int, default=10_000, help="training images")
    parser.add_argument("--test", type=int, default=2_000, help="test images")
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=[0, 1, 2, 3], help="random subsets to score"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    data = {
        split: tuple(torch.from_numpy(a.copy()) for a in prep.read_split(args.source, prefix))
        for split, prefix in (("train", "train"), ("test", "t10k"))
    }
    subsets: dict[str, dict[str, np.ndarray]] = {
        ("first" if seed is None else f"seed {seed}"): {
            split: prep.subset(len(data[split][0]), count, seed)
            for split, count in (("train", args.train), ("test", args.test))
        }
        for seed in [None, *args.seeds]
    }
    rows = {}
    print("| subset | raw pixels, eval's 32 px view | raw pixels, 28 px in [0, 1] |")
    print("|---|---|---|")
    for name, index in subsets.items():
        (xtr, ytr), (xte, yte) = data["train"], data["test"]
        itr, ite = torch.from_numpy(index["train"]), torch.from_numpy(index["test"])
        rows[name] = {
            view: knn_accuracy(
                pixels(xtr[itr], view), ytr[itr].long(), pixels(xte[ite], view), yte[ite].long(), 10
            )
            for view in ("eval32", "raw28")
        }
        print(f"| {name} | {rows[name]['eval32']:.4f} | {rows[name]['raw28']:.4f} |")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
