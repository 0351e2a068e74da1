"""`make demo`: fastssl end to end on Fashion-MNIST, on the CPU, in a few minutes.

Steps:
1. write Fashion-MNIST (Debian's ``dataset-fashion-mnist``) as image folders;
2. convert the training folder into WebDataset shards with ``fastssl shards``;
3. pretrain SimCLR (ResNet-18, CIFAR stem) from the shards for a bounded time, with
   fastssl's building blocks in a plain PyTorch loop (the seed README's loop);
4. evaluate with weighted kNN (k=200, t=0.1) beside the random-init and raw-pixel
   baselines.

Usage: python tools/demo.py [--out DIR] [--minutes M] [--train N] [--test N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader

from fastssl import loss, transforms
from fastssl.data import LightlyDataset
from fastssl.eval import knn_accuracy
from fastssl.models.modules import heads

ROOT = Path(__file__).resolve().parent.parent


def resnet18_cifar() -> nn.Module:
    """ResNet-18 with the CIFAR stem (3x3 conv, no max-pool) for 32 px inputs."""
    backbone = torchvision.models.resnet18()
    backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    backbone.maxpool = nn.Identity()
    backbone.fc = nn.Identity()
    return backbone


class SimCLR(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = heads.SimCLRProjectionHead(512, 512, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))


@torch.no_grad()
def embed(
    backbone: nn.Module | None, folder: Path, batch_size: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (or raw pixels when ``backbone`` is None) and labels of a folder."""
    to_tensor = torchvision.transforms.Compose(
        [
            torchvision.transforms.Grayscale(num_output_channels=3),
            torchvision.transforms.Resize(32),
            torchvision.transforms.ToTensor(),
            torchvision.transforms.Normalize(
                transforms.utils.IMAGENET_NORMALIZE["mean"],
                transforms.utils.IMAGENET_NORMALIZE["std"],
            ),
        ]
    )
    loader = DataLoader(
        LightlyDataset(str(folder), transform=to_tensor), batch_size=batch_size, num_workers=2
    )
    features, labels = [], []
    if backbone is not None:
        backbone.eval()
    for images, targets, _ in loader:
        features.append(images.flatten(1) if backbone is None else backbone(images).flatten(1))
        labels.append(targets)
    return torch.cat(features), torch.cat(labels)


def evaluate(backbone: nn.Module | None, data: Path) -> float:
    train_x, train_y = embed(backbone, data / "train")
    test_x, test_y = embed(backbone, data / "test")
    return knn_accuracy(train_x, train_y, test_x, test_y, num_classes=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "demo_out", help="work folder (default: %(default)s)"
    )
    parser.add_argument(
        "--minutes", type=float, default=4.0, help="pretraining time budget (default: %(default)s)"
    )
    parser.add_argument(
        "--train", type=int, default=10_000, help="training images (default: %(default)s)"
    )
    parser.add_argument(
        "--test", type=int, default=2_000, help="test images (default: %(default)s)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of data choice, order and init (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    data = args.out / "fashion-mnist"

    print("== 1. Fashion-MNIST as image folders")
    subprocess.run(
        [sys.executable, str(ROOT / "tools/prepare_fashion_mnist.py"), str(data),
         "--train", str(args.train), "--test", str(args.test), "--seed", str(args.seed)],
        check=True,
    )  # fmt: skip

    print(
        "== 2. pretraining SimCLR (ResNet-18, CIFAR stem, 32 px) for at most", args.minutes, "min"
    )
    transform = transforms.SimCLRTransform(input_size=32, gaussian_blur=0.0, min_scale=0.2)
    dataset = LightlyDataset(str(data / "train"), transform=transform)
    loader = DataLoader(
        dataset,
        batch_size=256,
        shuffle=True,
        drop_last=True,
        num_workers=2,
        persistent_workers=True,
    )
    model = SimCLR(resnet18_cifar())
    criterion = loss.NTXentLoss(temperature=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    start, steps, images, epoch = time.perf_counter(), 0, 0, 0
    deadline = start + args.minutes * 60
    while time.perf_counter() < deadline:
        model.train()
        for (view0, view1), _, _ in loader:
            value = criterion(model(view0), model(view1))
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            steps, images = steps + 1, images + view0.shape[0]
            if steps % 10 == 0:
                rate = images / (time.perf_counter() - start)
                print(
                    f"epoch {epoch} step {steps} loss {value.item():.4f} ({rate:.0f} images/s)",
                    flush=True,
                )
            if time.perf_counter() >= deadline:
                break
        epoch += 1
    wall = time.perf_counter() - start

    print("== 3. weighted kNN (k=200, t=0.1) on", args.test, "test images")
    results = {
        "fastssl SimCLR": evaluate(model.backbone, data),
        "random-init ResNet-18": evaluate(resnet18_cifar(), data),
        "raw pixels": evaluate(None, data),
    }
    for name, accuracy in results.items():
        print(f"  {name:<24} kNN top-1 {accuracy:.3f}")
    summary = {"steps": steps, "images": images, "wall_s": round(wall, 1), "knn_top1": results}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"pretrained {steps} steps in {wall:.0f} s; summary in {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
