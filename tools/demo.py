"""`make demo`: fastssl end to end on Fashion-MNIST, on the CPU, in a few minutes.

Every step is one of fastssl's own commands, printed before it runs, so the demo doubles
as a walk-through of the three daily jobs:

1. write Fashion-MNIST (Debian's ``dataset-fashion-mnist``) as image folders;
2. ``fastssl shards``: convert the training folder into WebDataset shards;
3. ``fastssl pretrain``: SimCLR from the shards with the small-image recipe
   (pipelines/fashion_mnist/simclr.yaml: standard-stem ResNet-18, 10 epochs), within a
   time budget;
4. ``fastssl eval knn``: weighted kNN (k=200, t=0.1) of the pretrained backbone beside
   the random-init and raw-pixel baselines;
5. ``fastssl profile``: where the time of a training step goes (loader against compute).

Usage: python tools/demo.py [--out DIR] [--minutes M] [--epochs E] [--train N] [--test N]
[--seed S] [--backbone NAME]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "pipelines" / "fashion_mnist" / "simclr.yaml"


def run(*args: str) -> None:
    """Runs ``fastssl ARGS`` (this interpreter's), echoing the command; fails loudly."""
    command = [sys.executable, "-m", "fastssl", *args]
    print("$ fastssl " + " ".join(shlex.quote(a) for a in args), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def knn(checkpoint: str, data: Path, out: Path, input_size: int, seed: int) -> float:
    """kNN top-1 of ``checkpoint`` (a file, ``random:<backbone>`` or ``pixels``)."""
    run(
        "eval", "knn", "--checkpoint", checkpoint, "--train", str(data / "train"),
        "--val", str(data / "test"), "--input-size", str(input_size), "--seed", str(seed),
        "--json", str(out), "--quiet",
    )  # fmt: skip
    return float(json.loads(out.read_text())["results"]["knn"]["top1"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="fastssl end to end on Fashion-MNIST: shards, pretrain, eval, profile."
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "demo_out", help="work folder (default: %(default)s)"
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=4.0,
        help="pretraining time budget; training stops there (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=10,
        help="pretraining epochs, the length of the learning-rate schedule (default: %(default)s)",
    )
    parser.add_argument(
        "--train", type=int, default=4_000, help="training images (default: %(default)s)"
    )
    parser.add_argument(
        "--test", type=int, default=2_000, help="test images (default: %(default)s)"
    )
    parser.add_argument(
        "--backbone",
        default="timm:resnet18",
        help="backbone name (default: %(default)s, the recipe's standard-stem ResNet-18; "
        "torchvision's resnet18 gets the CIFAR stem at 32 px, about 16x slower)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of data choice, order, augmentation and init (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.epochs < 1 or args.train < 1 or args.test < 1:
        parser.error("--minutes must be > 0 and --epochs, --train, --test >= 1")
    out: Path = args.out.resolve()
    data, shards, run_dir = out / "fashion-mnist", out / "shards", out / "pretrain"
    out.mkdir(parents=True, exist_ok=True)
    size = 32
    start = time.perf_counter()

    print("== 1. Fashion-MNIST as image folders", flush=True)
    subprocess.run(
        [sys.executable, str(ROOT / "tools/prepare_fashion_mnist.py"), str(data),
         "--train", str(args.train), "--test", str(args.test), "--seed", str(args.seed)],
        check=True,
    )  # fmt: skip

    print("== 2. image folder -> WebDataset shards", flush=True)
    run("shards", str(data / "train"), str(shards), "--max-count", "2000", "--seed", str(args.seed))

    seconds = int(args.minutes * 60)
    max_time = f"00:00:{seconds // 60:02d}:{seconds % 60:02d}"
    # The small-image recipe: the paper's SimCLR and LARS, with the backbone, learning rate,
    # warm-up and views measured on Fashion-MNIST (see its header).
    overrides = [
        "--data", str(shards), "--input-size", str(size), "--batch-size", "256",
        "--accelerator", "cpu", "--seed", str(args.seed),
        "--set", f"method_kwargs.backbone={args.backbone}", "--set", "trainer.log_every_n_steps=5",
    ]  # fmt: skip
    print(f"== 3. pretraining SimCLR for {args.epochs} epochs, at most {max_time}", flush=True)
    run(
        "pretrain", str(RECIPE), *overrides, "--max-epochs", str(args.epochs),
        "--max-time", max_time, "--out", str(run_dir),
    )  # fmt: skip
    summary = json.loads((run_dir / "summary.json").read_text())

    print("== 4. weighted kNN (k=200, t=0.1) on", args.test, "test images", flush=True)
    results = {
        "fastssl SimCLR": knn(str(run_dir / "last.ckpt"), data, out / "knn.json", size, args.seed),
        f"random-init {args.backbone}": knn(
            f"random:{args.backbone}", data, out / "knn_random.json", size, args.seed
        ),
        "raw pixels": knn("pixels", data, out / "knn_pixels.json", size, args.seed),
    }

    print("== 5. where a training step's time goes", flush=True)
    # Three measured steps and one alternative keep this step to a couple of minutes.
    run(
        "profile", str(RECIPE), *overrides, "--steps", "3", "--variants", "channels_last",
        "--out", str(out / "profile"),
    )  # fmt: skip
    profile_path = out / "profile" / "profile.json"
    profile = json.loads(profile_path.read_text()) if profile_path.exists() else {}

    print("\n== results")
    for name, accuracy in results.items():
        print(f"  {name:<28} kNN top-1 {accuracy:.3f}")
    print(
        f"  pretraining: {summary['steps']} steps, {summary['epochs']} epochs, "
        f"{summary['wall_s']:.0f} s, {summary['images_per_s']:.1f} images/s, "
        f"data wait {summary['data_wait_fraction']:.0%}"
    )
    if profile:
        print(f"  profile: {profile.get('bound', '?')}-bound; chart in {out / 'profile'}")
    report = {
        "knn_top1": results,
        "pretrain": summary,
        "profile": {k: profile.get(k) for k in ("bound", "data_wait_fraction")},
        "demo_wall_s": round(time.perf_counter() - start, 1),
    }
    (out / "summary.json").write_text(json.dumps(report, indent=2))
    print(f"demo done in {report['demo_wall_s']:.0f} s; summary in {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
