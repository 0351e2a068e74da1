"""``fastssl eval knn|linear|finetune``: score a pretrained backbone on a labeled dataset.

One or more modes run in one call (``fastssl eval knn linear ...``); kNN and the linear
probe share one feature extraction, and fine-tuning (which changes the backbone) runs last.
The result is printed as the table of LightlySSL's benchmarks (Linear Top1, Finetune Top1,
kNN Top1: the columns computed) and written as JSON with ``--json``.

Example:
    >>> from fastssl.cli import main
    >>> main(["eval", "knn", "--checkpoint", "last.ckpt", "--train", "train/",
    ...       "--val", "val/", "--json", "knn.json"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fastssl import __version__
from fastssl.cli import EXIT_INTERNAL, exit_code, report_error
from fastssl.eval.checkpoint import check_finite, load_method
from fastssl.eval.features import (
    PixelFeatures,
    class_mapping,
    eval_transform,
    extract_features,
    open_labeled,
)
from fastssl.eval.knn import knn_predict
from fastssl.utils.argtypes import positive_float, positive_int

MODES = ("linear", "finetune", "knn")  # the order of the benchmark table's columns
COLUMNS = {"linear": "Linear Top1", "finetune": "Finetune Top1", "knn": "kNN Top1"}

DESCRIPTION = """\
Evaluate the backbone of a `fastssl pretrain` checkpoint on a labeled dataset: an image
folder with one subfolder per class, or `fastssl shards` output. Validation classes are
matched to training classes by name.

modes (one or more):
  knn       weighted k-nearest neighbours on frozen features (InstDisc: k=200, t=0.1)
  linear    linear probe on frozen features (SGD + cosine lr, BatchNorm without affine)
  finetune  backbone + linear head trained end to end (random resized crop + flip)

--checkpoint also accepts two baselines:
  random:<backbone>   a randomly initialised backbone, e.g. random:resnet18 (seeded by
                      --seed); needs --input-size
  pixels              the raw pixels of the resized image as features; needs --input-size
                      (knn and linear only)

--network ema evaluates the EMA copy of the backbone instead of the trained one: BYOL's
target, DINO's teacher, MoCo's and DenseCL's key encoder, MSN's target, TiCo's momentum
encoder (the network DINO's paper, and lightly's benchmarks for DINO and TiCo, report)."""


def _default_workers() -> int:
    return min(8, len(os.sched_getaffinity(0)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of ``fastssl eval`` to ``parser``."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "modes", nargs="+", choices=MODES, metavar="MODE", help="knn, linear, finetune"
    )
    parser.add_argument(
        "--checkpoint", required=True, metavar="CKPT",
        help="`fastssl pretrain` checkpoint, random:<backbone> or pixels (see above)",
    )  # fmt: skip
    parser.add_argument(
        "--network", choices=("online", "ema"), default="online",
        help="online: the trained backbone (default); ema: its EMA copy (see above)",
    )  # fmt: skip
    parser.add_argument("--train", required=True, metavar="DIR", help="labeled training data")
    parser.add_argument("--val", required=True, metavar="DIR", help="labeled validation data")
    parser.add_argument(
        "--input-size", type=positive_int, default=None, metavar="N",
        help="image side in pixels (default: the checkpoint's training size)",
    )  # fmt: skip
    parser.add_argument(
        "--resize", type=positive_int, default=None, metavar="N",
        help="resize the short side to N, then center-crop --input-size (lightly's ImageNet "
        "protocol: --resize 256 at 224; default: resize to the input size)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=positive_int, default=256, metavar="B")
    parser.add_argument(
        "--epochs", type=positive_int, default=None, metavar="E",
        help="epochs of linear (default 90) and finetune (default 30)",
    )  # fmt: skip
    parser.add_argument(
        "--lr", type=positive_float, default=None,
        help="peak learning rate of linear (default 0.1) and of finetune's head "
        "(default 0.05 with sgd, 1e-3 with adamw)",
    )  # fmt: skip
    parser.add_argument(
        "--weight-decay", type=float, default=None,
        help="linear: default 0; finetune: default 1e-4 (sgd) or 0.05 (adamw)",
    )  # fmt: skip
    parser.add_argument(
        "--optimizer", choices=("sgd", "adamw"), default="sgd", help="finetune's optimizer"
    )
    parser.add_argument(
        "--backbone-lr-scale", type=float, default=0.1,
        help="finetune: backbone lr = lr x this (default 0.1)",
    )  # fmt: skip
    parser.add_argument(
        "--min-scale", type=positive_float, default=0.2, metavar="S",
        help="finetune: smallest random-resized-crop area, fraction of the image (default "
        "0.2; lightly's ImageNet protocol: 0.08)",
    )  # fmt: skip
    parser.add_argument(
        "--no-batch-norm", action="store_true",
        help="linear: no BatchNorm (without affine) before the linear layer",
    )  # fmt: skip
    parser.add_argument("--k", type=positive_int, default=200, help="kNN neighbours (200)")
    parser.add_argument(
        "--temperature", type=positive_float, default=0.1, help="kNN vote temperature (0.1)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, metavar="W",
        help="DataLoader workers (default: usable cores, at most 8)",
    )  # fmt: skip
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda when available, else cpu)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of everything random (0)")
    parser.add_argument("--json", default=None, metavar="F", help="also write the results here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


@dataclass
class EvalModel:
    """The backbone under evaluation and what it is."""

    backbone: nn.Module
    feature_dim: int
    input_size: int
    method: str  # registry name, "random" or "pixels"
    backbone_name: str


def resolve_model(
    spec: str, input_size: int | None, seed: int = 0, network: str = "online"
) -> EvalModel:
    """Builds the model named by ``--checkpoint``: a checkpoint file or a baseline.

    Args:
        spec: A checkpoint path, ``random:<backbone>`` or ``pixels``.
        input_size: Image side (default: the checkpoint's training size).
        seed: Seed of a random baseline.
        network: ``"online"`` (the trained backbone) or ``"ema"`` (its EMA copy).

    Raises:
        ValueError: For a baseline without ``input_size``, an unknown backbone, a
            checkpoint that cannot be loaded (:class:`~fastssl.eval.checkpoint.CheckpointError`),
            or ``network="ema"`` for a baseline or a method without an EMA copy.
    """
    if network not in ("online", "ema"):
        raise ValueError(f"--network {network!r} is unknown: choose online or ema")
    baseline = spec == "pixels" or spec.startswith("random:")
    if network == "ema" and baseline:
        raise ValueError(f"--network ema needs a checkpoint: {spec} has no EMA backbone")
    if baseline:
        if input_size is None:
            raise ValueError(f"--checkpoint {spec} needs --input-size (e.g. --input-size 32)")
        if spec == "pixels":
            return EvalModel(PixelFeatures(), 3 * input_size**2, input_size, "pixels", "pixels")
        from fastssl.models.backbones import build_backbone

        name = spec[len("random:") :]
        torch.manual_seed(seed)
        backbone, dim = build_backbone(name, input_size)
        return EvalModel(backbone.eval(), dim, input_size, "random", name)
    model, info = load_method(spec)
    size = int(model.input_size) if input_size is None else input_size
    backbone = model.backbone
    if network == "ema":
        ema = model.ema_backbone()
        if ema is None:
            raise ValueError(
                f"--network ema: method {info.method!r} keeps no EMA copy of its backbone; "
                "use --network online"
            )
        backbone = ema
    check_finite(backbone, spec)  # a diverged run: refused, not scored at chance
    return EvalModel(backbone, int(model.feature_dim), size, info.method, info.backbone_name)


def knn_topk(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float,
    batch_size: int = 1024,
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy of weighted kNN (features L2-normalised here)."""
    bank = torch.nn.functional.normalize(train_features.float(), dim=1).T.contiguous()
    queries = torch.nn.functional.normalize(val_features.float(), dim=1)
    top = min(5, num_classes)
    hits1 = hits5 = 0
    for start in range(0, len(queries), batch_size):
        ranked = knn_predict(
            queries[start : start + batch_size], bank, train_labels, num_classes, k, temperature
        )
        labels = val_labels[start : start + batch_size, None]
        hits1 += int((ranked[:, :1] == labels).any(dim=1).sum())
        hits5 += int((ranked[:, :top] == labels).any(dim=1).sum())
    return hits1 / len(queries), hits5 / len(queries)


def format_table(row: dict[str, str], columns: list[str]) -> str:
    """A Markdown table of one row, as in LightlySSL's benchmark tables."""
    widths = [max(len(c), len(row[c])) for c in columns]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        "| " + " | ".join(row[c].ljust(w) for c, w in zip(columns, widths, strict=True)) + " |",
    ]
    return "\n".join(lines)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the requested modes; returns the JSON report (see ``fastssl eval --help``)."""
    modes = [mode for mode in MODES if mode in args.modes]
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    workers = _default_workers() if args.workers is None else args.workers
    progress = not args.quiet
    torch.manual_seed(args.seed)
    model = resolve_model(args.checkpoint, args.input_size, args.seed, args.network)
    if "finetune" in modes and model.method == "pixels":
        raise ValueError("--checkpoint pixels has no weights to fine-tune: use knn or linear")
    model.backbone.to(device)
    transform = eval_transform(model.input_size, args.resize)
    train = open_labeled(args.train, transform)
    val = open_labeled(args.val, transform)
    target_map = class_mapping(train.classes, val)  # fails early on unknown val classes
    num_classes = len(train.classes)
    report: dict[str, Any] = {
        "fastssl_version": __version__,
        "checkpoint": args.checkpoint,
        "network": args.network,
        "method": model.method,
        "backbone": model.backbone_name,
        "feature_dim": model.feature_dim,
        "input_size": model.input_size,
        "resize": args.resize,
        "train": args.train,
        "val": args.val,
        "num_train": len(train),
        "num_val": len(val),
        "num_classes": num_classes,
        "seed": args.seed,
        "device": str(device),
        "results": {},
    }
    results: dict[str, dict[str, Any]] = report["results"]
    if "knn" in modes or "linear" in modes:
        start = time.perf_counter()
        common: dict[str, Any] = {
            "batch_size": args.batch_size, "num_workers": workers, "device": device,
            "progress": progress, "origin": f"--checkpoint {args.checkpoint!r}",
        }  # fmt: skip
        train_feats = extract_features(model.backbone, train, **common)
        val_feats = extract_features(model.backbone, val, target_map=target_map, **common)
        report["feature_time_s"] = round(time.perf_counter() - start, 3)
        for data, feats in ((train, train_feats), (val, val_feats)):
            if len(feats.features) != len(data):  # a loader that lost or repeated samples
                raise RuntimeError(
                    f"{data.source!r}: extracted {len(feats.features)} features for "
                    f"{len(data)} samples"
                )
        if "knn" in modes:
            start = time.perf_counter()
            top1, top5 = knn_topk(
                train_feats.features, train_feats.labels, val_feats.features,
                val_feats.labels, num_classes, args.k, args.temperature,
            )  # fmt: skip
            results["knn"] = {
                "top1": top1, "top5": top5, "k": args.k, "temperature": args.temperature,
                "time_s": round(time.perf_counter() - start, 3),
            }  # fmt: skip
        if "linear" in modes:
            from fastssl.eval.linear import linear_probe

            start = time.perf_counter()
            settings = {
                "epochs": args.epochs or 90,
                "lr": args.lr or 0.1,
                "batch_size": args.batch_size,
                "weight_decay": args.weight_decay or 0.0,
                "batch_norm": not args.no_batch_norm,
            }
            probe = linear_probe(
                train_feats.features, train_feats.labels, val_feats.features,
                val_feats.labels, num_classes, seed=args.seed, device=device,
                progress=progress, **settings,
            )  # fmt: skip
            results["linear"] = {
                "top1": probe.top1, "top5": probe.top5, **settings, "losses": probe.losses,
                "time_s": round(time.perf_counter() - start, 3),
            }  # fmt: skip
    if "finetune" in modes:
        from fastssl.eval.finetune import finetune

        start = time.perf_counter()
        adamw = args.optimizer == "adamw"
        settings = {
            "epochs": args.epochs or 30,
            "lr": args.lr or (1e-3 if adamw else 0.05),
            "backbone_lr_scale": args.backbone_lr_scale,
            "optimizer": args.optimizer,
            "weight_decay": args.weight_decay
            if args.weight_decay is not None
            else (0.05 if adamw else 1e-4),
            "batch_size": args.batch_size,
            "min_scale": args.min_scale,
        }
        tuned = finetune(
            model.backbone, model.feature_dim,
            open_labeled(args.train, shuffle=True, seed=args.seed), open_labeled(args.val),
            model.input_size, num_workers=workers, seed=args.seed, device=device,
            progress=progress, resize=args.resize, **settings,
        )  # fmt: skip
        results["finetune"] = {
            "top1": tuned.top1, "top5": tuned.top5, **settings, "losses": tuned.losses,
            "time_s": round(time.perf_counter() - start, 3),
        }  # fmt: skip
    return report


def run(args: argparse.Namespace) -> int:
    """Runs ``fastssl eval``; returns the exit code (0 done, 2 bad input, 3 non-finite features)."""
    try:
        report = evaluate(args)
    except Exception as error:  # user errors: one line (exit 2); bugs propagate
        if exit_code(error) == EXIT_INTERNAL:
            raise
        return report_error("fastssl eval", error)
    row = {
        "Checkpoint": os.path.basename(report["checkpoint"]) or report["checkpoint"],
        "Method": report["method"],
        "Backbone": report["backbone"],
    }
    columns = list(row)
    for mode in MODES:
        if mode in report["results"]:
            row[COLUMNS[mode]] = f"{report['results'][mode]['top1']:.3f}"
            columns.append(COLUMNS[mode])
    print(format_table(row, columns))
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(folder, exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")
    return 0
