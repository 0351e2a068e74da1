"""One pretraining epoch of SimCLR / ResNet-18: ``fastssl pretrain`` against the seed README's
LightlySSL loop, on the same images, side by side in one run.

Data: N Fashion-MNIST training images (Debian's ``dataset-fashion-mnist``, written as an
image folder by tools/prepare_fashion_mnist.py), at 32 px, batch 256, SimCLR's views with
``cj_prob=0.5`` as in the seed README.

* ``lightly loop``: the seed README's PyTorch loop with lightly 1.6.0 (``LightlyDataset``,
  ``SimCLRTransform(input_size=32, cj_prob=0.5)``, ``DataLoader(num_workers=W)``,
  torchvision ResNet-18 with ``fc = Identity``, ``NTXentLoss(temperature=0.5)``, SGD).
* ``fastssl pretrain``: ``pipelines/simclr.yaml`` with the same backbone architecture
  (``timm:resnet18``: the standard stem, as the peer's torchvision ResNet-18, so both do the
  same arithmetic), once in float32 and once with the recipe's ``bf16-mixed`` (on a CPU
  with native bf16 only: elsewhere pretrain trains bf16-mixed in float32).

Each runs in its own process, one after the other. Reported: the wall time of the whole
command (interpreter and library start-up included) and the images/s of the training loop
(from its start, the loader workers' start-up and the first batch included, for both).

Prints a table and writes benchmarks/results/pretrain_epoch.json.

Usage: python benchmarks/pretrain_epoch.py [--n 5000] [--workers 2] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import torch

from fastssl.train.engine import cpu_supports

ROOT = Path(__file__).resolve().parents[1]

PEER = textwrap.dedent(
    """
    import json, sys, time
    import torch, torchvision
    from lightly import loss, transforms
    from lightly.data import LightlyDataset
    from lightly.models.modules import heads

    folder = sys.argv[1]
    workers, epochs, seed = (int(a) for a in sys.argv[2:5])
    torch.manual_seed(seed)

    class SimCLR(torch.nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone
            self.projection_head = heads.SimCLRProjectionHead(512, 512, 128)

        def forward(self, x):
            return self.projection_head(self.backbone(x).flatten(start_dim=1))

    backbone = torchvision.models.resnet18()
    backbone.fc = torch.nn.Identity()
    model = SimCLR(backbone)
    transform = transforms.SimCLRTransform(input_size=32, cj_prob=0.5)
    dataset = LightlyDataset(input_dir=folder, transform=transform)
    dataloader = torch.utils.data.DataLoader(
        dataset, batch_size=256, shuffle=True, drop_last=True, num_workers=workers
    )
    criterion = loss.NTXentLoss(temperature=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-6)
    steps, images, start = 0, 0, time.perf_counter()
    for epoch in range(epochs):
        for (view0, view1), targets, filenames in dataloader:
            z0, z1 = model(view0), model(view1)
            value = criterion(z0, z1)
            value.backward()
            optimizer.step()
            optimizer.zero_grad()
            steps, images = steps + 1, images + view0.shape[0]
    train_s = time.perf_counter() - start
    rate = images / train_s
    print(json.dumps({"steps": steps, "images_per_s": rate, "final_loss": float(value)}))
    """
)


def run_peer(folder: Path, workers: int, epochs: int, seed: int) -> dict[str, Any]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEER, str(folder), str(workers), str(epochs), str(seed)],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "wall_s": time.perf_counter() - start}


def pretrain_command(
    folder: Path, out: Path, workers: int, epochs: int, seed: int, *extra: str
) -> list[str]:
    """``fastssl pretrain`` of SimCLR at 32 px, batch 256, on the peer's ResNet-18 (the
    standard stem, ``timm:resnet18``), on the CPU; ``extra`` flags are appended."""
    return [
        sys.executable, "-m", "fastssl", "pretrain", str(ROOT / "pipelines/simclr.yaml"),
        "--data", str(folder), "--input-size", "32", "--batch-size", "256",
        "--num-workers", str(workers), "--max-epochs", str(epochs), "--accelerator", "cpu",
        "--seed", str(seed), "--out", str(out), "--set", "method_kwargs.backbone=timm:resnet18",
        *extra,
    ]  # fmt: skip


def write_report(
    out: str, setup: dict[str, Any], rows: dict[str, Any], load: tuple[Any, Any]
) -> None:
    """Writes a benchmark's JSON: its setup, the machine (cores, load average before and
    after the runs) and its result rows."""
    report = {
        "setup": setup,
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": cpu_supports(torch.bfloat16),
            "load_before": load[0],
            "load_after": load[1],
        },
        "results": rows,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")


def run_ours(
    folder: Path, out: Path, workers: int, epochs: int, seed: int, precision: str
) -> dict[str, Any]:
    command = pretrain_command(
        folder, out, workers, epochs, seed,
        "--precision", precision, "--set", "schedule.warmup_epochs=0",
    )  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    return {
        "steps": summary["steps"],
        # The engine counts from the start of the training loop, like the peer's script.
        "images_per_s": summary["images_per_s"],
        "final_loss": summary["final_loss"],
        "data_wait_fraction": summary["data_wait_fraction"],
        "precision": summary["precision"],
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="training images (default 5000)")
    parser.add_argument("--workers", type=int, default=2, help="loader workers (default 2)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/pretrain_epoch.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fastssl-epoch-bench-") as tmp:
        work = Path(tmp)
        subprocess.run(
            [sys.executable, str(ROOT / "tools/prepare_fashion_mnist.py"), str(work / "fm"),
             "--train", str(args.n), "--test", "10", "--seed", str(args.seed)],
            check=True, capture_output=True,
        )  # fmt: skip
        folder = work / "fm" / "train"
        load_before = os.getloadavg()
        rows = {"lightly loop (fp32)": run_peer(folder, args.workers, args.epochs, args.seed)}
        # Without native bf16 pretrain trains bf16-mixed in 32-true: the row would repeat.
        precisions = ("32", "bf16-mixed") if cpu_supports(torch.bfloat16) else ("32",)
        for precision in precisions:
            rows[f"fastssl pretrain ({precision})"] = run_ours(
                folder, work / f"run-{precision}", args.workers, args.epochs, args.seed, precision
            )
        load_after = os.getloadavg()
    peer = rows["lightly loop (fp32)"]
    for row in rows.values():
        row["x_peer_images_per_s"] = row["images_per_s"] / peer["images_per_s"]
        row["x_peer_wall"] = peer["wall_s"] / row["wall_s"]
    setup = {
        "data": f"{args.n} Fashion-MNIST images, 32 px, SimCLR views (cj_prob=0.5)",
        "model": "ResNet-18 (standard stem) + SimCLR head, NT-Xent t=0.5",
        "batch_size": 256,
        "epochs": args.epochs,
        "workers": args.workers,
    }
    write_report(args.out, setup, rows, (load_before, load_after))
    print(f"{'':28} {'wall s':>8} {'images/s':>9} {'x peer (img/s)':>15} {'steps':>6}")
    for name, row in rows.items():
        print(
            f"{name:28} {row['wall_s']:8.1f} {row['images_per_s']:9.1f} "
            f"{row['x_peer_images_per_s']:15.2f} {row['steps']:6d}"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
