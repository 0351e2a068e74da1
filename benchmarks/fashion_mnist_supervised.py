"""A supervised ceiling for the Fashion-MNIST kNN target: the same ResNet-18, the same images,
epochs and evaluation as the SimCLR runs of benchmarks/fashion_mnist.md, but trained with
the labels.

``timm:resnet18`` (standard stem, as the SimCLR runs) plus a linear classifier, trained with
cross-entropy on the 10,000 training images at 32 px (random resized crop, scale
``--min-scale``-1, horizontal flip), batch 256, SGD (momentum 0.9, Nesterov, weight decay
5e-4) with a 1-epoch warm-up and cosine decay. Then the backbone alone is scored exactly as
the self-supervised ones (``fastssl.eval``: resize to 32 px, pooled 512-d features, weighted
kNN k=200, t=0.1 on the 2,000 test images), beside the classifier's own test accuracy.

How far above 0.80 this lands says how much of the gap between the SimCLR runs (0.76-0.775)
and the issue's 0.80 a representation of this network can close in 390 steps at all.

``--backbone`` trains another backbone the same way (``benchmarks/methods_fashion_mnist.py``
gives each recipe's backbone its supervised baseline; ViTs with ``--optimizer adamw``), and
``--save-backbone F`` keeps the trained backbone's weights.

Usage: python benchmarks/fashion_mnist_supervised.py --data /tmp/fm [--epochs 10]
    [--lr 0.1] [--min-scale 0.7] [--seed 0] [--backbone B] [--optimizer sgd|adamw]
    [--weight-decay W] [--save-backbone F] [--out F]
(--data: the output of tools/prepare_fashion_mnist.py, with train/ and test/ folders.)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torchvision.transforms as T
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastssl.eval.features import eval_transform, extract_features, open_labeled  # noqa: E402
from fastssl.eval.knn import knn_accuracy  # noqa: E402
from fastssl.models.backbones import build_backbone  # noqa: E402
from fastssl.transforms.utils import IMAGENET_NORMALIZE  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with train/ and test/")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    parser.add_argument("--lr", type=float, default=0.1, help="peak SGD lr (default 0.1)")
    parser.add_argument("--min-scale", type=float, default=0.7, help="crop scale (default 0.7)")
    parser.add_argument("--input-size", type=int, default=32, help="pixels (default 32)")
    parser.add_argument("--num-workers", type=int, default=2, help="loader workers (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument(
        "--backbone", default="timm:resnet18", help="backbone name (default timm:resnet18)"
    )
    parser.add_argument(
        "--optimizer",
        choices=("sgd", "adamw"),
        default="sgd",
        help="sgd: momentum 0.9, Nesterov (default); adamw: betas (0.9, 0.999)",
    )
    parser.add_argument(
        "--weight-decay", type=float, default=5e-4, help="weight decay (default 5e-4)"
    )
    parser.add_argument(
        "--save-backbone", type=Path, default=None, help="write the backbone's state_dict here"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "fashion_mnist_supervised.json",
        help="JSON report",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    size = args.input_size
    train_transform = T.Compose(
        [
            T.RandomResizedCrop(size, scale=(args.min_scale, 1.0)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_NORMALIZE["mean"], IMAGENET_NORMALIZE["std"]),
        ]
    )
    train_data = open_labeled(args.data / "train", train_transform)
    loader = torch.utils.data.DataLoader(
        train_data.dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.num_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )
    backbone, dim = build_backbone(args.backbone, input_size=size)
    classes = len(train_data.classes)
    model = nn.Sequential(backbone, nn.Flatten(), nn.Linear(dim, classes))
    optimizer: torch.optim.Optimizer
    if args.optimizer == "adamw":
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=args.lr, weight_decay=args.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=args.lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=args.weight_decay,
        )
    total, warmup = args.epochs * len(loader), len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / warmup
            if s < warmup
            else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(total - warmup, 1)))
        ),
    )
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for images, labels, *_ in loader:
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}/{args.epochs}: loss {float(loss.detach()):.3f}", flush=True)
    train_s = time.perf_counter() - start

    model.eval()
    evaluation = eval_transform(size)
    bank = extract_features(backbone, open_labeled(args.data / "train", evaluation))
    queries = extract_features(backbone, open_labeled(args.data / "test", evaluation))
    knn = knn_accuracy(bank.features, bank.labels, queries.features, queries.labels, classes)
    with torch.no_grad():
        head = model[2]
        predicted = head(queries.features).argmax(dim=1)
    report = {
        "backbone": args.backbone,
        "epochs": args.epochs,
        "steps": total,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "min_scale": args.min_scale,
        "seed": args.seed,
        "knn_top1": knn,
        "classifier_top1": float((predicted == queries.labels).float().mean()),
        "train_s": train_s,
    }
    if args.save_backbone is not None:
        args.save_backbone.parent.mkdir(parents=True, exist_ok=True)
        torch.save(backbone.state_dict(), args.save_backbone)
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
