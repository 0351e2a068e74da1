"""Accuracy per CPU-minute on Fashion-MNIST: ``fastssl pretrain`` against the seed README's
LightlySSL recipe, trained for the same epochs on the same images, evaluated by the same code.

* ``lightly loop``: the seed README's SimCLR loop with lightly 1.6.0 (torchvision ResNet-18,
  ``SimCLRTransform(input_size=32, cj_prob=0.5)``, batch 256, NT-Xent t=0.5, SGD lr 0.1),
  the script of benchmarks/pretrain_epoch.py, saving its backbone at the end.
* ``fastssl pretrain``: ``pipelines/simclr.yaml --input-size 32 --batch-size 256`` with the
  same backbone architecture (``timm:resnet18``, the standard stem) and a 1-epoch warm-up
  (the paper's 10 would be the whole run), plus the ``--set`` overrides given here.
* baselines, no training: the peer's ResNet-18 at its random initialisation (seeded) and
  the raw pixels of the 32 px image.

Every backbone then goes through one function: fastssl's evaluation transform, feature
extraction and weighted kNN (k=200, t=0.1) on the test images. Reported: kNN top-1, the
wall time and the CPU time of the training process (user + system, all its threads and
workers), and top-1 per CPU-minute.

Prints a table and writes the JSON to --out (default benchmarks/results/
fashion_mnist_accuracy.json).

Usage: python benchmarks/fashion_mnist_accuracy.py [--train 10000] [--test 2000] [--epochs 5]
    [--first] [--seed S] [--set KEY=VALUE ...] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pretrain_epoch import PEER, pretrain_command, write_report  # noqa: E402

from fastssl.eval.features import (  # noqa: E402
    PixelFeatures,
    eval_transform,
    extract_features,
    open_labeled,
)
from fastssl.eval.knn import knn_accuracy  # noqa: E402
from fastssl.train.checkpoint import load_method  # noqa: E402

# The seed loop, then its backbone saved for the shared evaluation.
PEER_SAVING = PEER + "\ntorch.save(backbone.state_dict(), sys.argv[5])\n"


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str]) -> tuple[float, float]:
    """Runs ``command``; returns its wall and CPU seconds (children included)."""
    cpu, start = children_cpu_s(), time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, children_cpu_s() - cpu


def knn_top1(backbone: nn.Module, data: Path) -> float:
    """Weighted kNN top-1 (k=200, t=0.1) of ``backbone`` on ``data``/{train,test}."""
    torch.set_num_threads(os.cpu_count() or 1)
    transform = eval_transform(32)
    train = extract_features(backbone, open_labeled(data / "train", transform))
    test = extract_features(backbone, open_labeled(data / "test", transform))
    classes = int(train.labels.max()) + 1
    return knn_accuracy(train.features, train.labels, test.features, test.labels, classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=10_000, help="training images")
    parser.add_argument("--test", type=int, default=2_000, help="test images")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of both runs")
    parser.add_argument("--workers", type=int, default=2, help="loader workers")
    parser.add_argument(
        "--seed", type=int, default=0,
        help="seed of both trainings, the random init and (without --first) the image subset",
    )  # fmt: skip
    parser.add_argument(
        "--first", action="store_true",
        help="use the first N images of each split (prepare_fashion_mnist.py --first) "
        "instead of the seeded random subset",
    )  # fmt: skip
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="extra `fastssl pretrain --set` overrides of the fastssl run (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks/results/fashion_mnist_accuracy.json")
    )
    args = parser.parse_args()
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fastssl-fmnist-") as tmp:
        work = Path(tmp)
        data = work / "fm"
        subprocess.run(
            [sys.executable, str(ROOT / "tools/prepare_fashion_mnist.py"), str(data),
             "--train", str(args.train), "--test", str(args.test),
             *(["--first"] if args.first else ["--seed", str(args.seed)])],
            check=True, capture_output=True,
        )  # fmt: skip
        load_before = os.getloadavg()

        weights = work / "peer_backbone.pt"
        wall, cpu = timed(
            [sys.executable, "-c", PEER_SAVING, str(data / "train"), str(args.workers),
             str(args.epochs), str(args.seed), str(weights)]
        )  # fmt: skip
        peer = torchvision.models.resnet18()
        peer.fc = nn.Identity()
        peer.load_state_dict(torch.load(weights))
        rows["lightly 1.6 seed loop"] = {"top1": knn_top1(peer, data), "wall_s": wall, "cpu_s": cpu}

        out = work / "ours"
        wall, cpu = timed(
            pretrain_command(
                data / "train", out, args.workers, args.epochs, args.seed,
                "--set", "schedule.warmup_epochs=1",
                *(arg for override in args.overrides for arg in ("--set", override)),
            )
        )  # fmt: skip
        ours = load_method(out / "last.ckpt").backbone
        trained = json.loads((out / "summary.json").read_text())["precision"]
        rows[f"fastssl pretrain ({trained})"] = {
            "top1": knn_top1(ours, data),
            "wall_s": wall,
            "cpu_s": cpu,
        }
        torch.manual_seed(args.seed)
        random_init = torchvision.models.resnet18()
        random_init.fc = nn.Identity()
        rows["random-init ResNet-18 (no training)"] = {"top1": knn_top1(random_init, data)}
        rows["raw pixels (no training)"] = {"top1": knn_top1(PixelFeatures(), data)}
        load_after = os.getloadavg()
    for row in rows.values():
        if "cpu_s" in row:
            row["top1_per_cpu_minute"] = row["top1"] / (row["cpu_s"] / 60)
    setup = {
        "train": args.train,
        "test": args.test,
        "subset": "first" if args.first else f"random, seed {args.seed}",
        "epochs": args.epochs,
        "batch_size": 256,
        "input_size": 32,
        "backbone": "ResNet-18, standard stem, both runs",
        "fastssl_overrides": ["schedule.warmup_epochs=1", *args.overrides],
        "eval": "weighted kNN k=200 t=0.1, fastssl.eval for both",
    }
    write_report(args.out, setup, rows, (load_before, load_after))
    print(f"{'':32} {'kNN top-1':>9} {'wall s':>7} {'CPU s':>7} {'top-1 / CPU-min':>15}")
    for name, row in rows.items():
        if "cpu_s" not in row:
            print(f"{name:32} {row['top1']:9.3f}")
            continue
        print(
            f"{name:32} {row['top1']:9.3f} {row['wall_s']:7.0f} {row['cpu_s']:7.0f} "
            f"{row['top1_per_cpu_minute']:15.4f}"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
