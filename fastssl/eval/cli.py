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
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fastssl import __version__
from fastssl.cli import EXIT_INTERNAL, exit_code, report_error
from fastssl.eval.checkpoint import NETWORKS, check_finite, load_method, select_backbone
from fastssl.eval.features import (
    Features,
    PixelFeatures,
    class_mapping,
    eval_resize,
    eval_transform,
    extract_features,
    open_labeled,
)
from fastssl.eval.finetune import RECIPES, finetune_recipe
from fastssl.eval.knn import knn_predict
from fastssl.utils.argtypes import positive_float, positive_int

MODES = ("linear", "finetune", "knn")  # the order of the benchmark table's columns
COLUMNS = {"linear": "Linear Top1", "finetune": "Finetune Top1", "knn": "kNN Top1"}

DESCRIPTION = """\
Evaluate the backbone of a `fastssl pretrain` checkpoint on a labeled dataset: an image
folder with one subfolder per class, or `fastssl shards` output. Validation classes are
matched to training classes by name.

modes (one or more); the defaults are the protocols of LightlySSL's ImageNet benchmarks
(benchmarks/imagenet/*/{knn,linear,finetune}_eval.py), so the numbers compare with its table:
  knn       weighted k-nearest neighbours on frozen features (InstDisc: k=200, t=0.1)
  linear    linear classifier on the frozen backbone (SimCLR's protocol): every epoch the
            training images are augmented (random resized crop from --min-scale 0.08 +
            horizontal flip) and go through the backbone in eval mode; SGD (momentum 0.9, no
            weight decay) at 0.1 x B/256, cosine decay, 90 epochs. Scored every epoch: JSON
            holds the last epoch (top1, the table's figure) and the best (best_top1, the
            figure lightly prints). --no-augment trains on centre-crop features extracted
            once (much faster; not lightly's protocol)
  finetune  backbone + linear head trained end to end, by --finetune-recipe (auto: mae for
            vision transformers, simclr otherwise):
              simclr  SGD (momentum 0.9, no weight decay) at 0.05 x B/256 for backbone and
                      head, cosine, 30 epochs, random resized crop + flip (lightly's
                      resnet50/finetune_eval.py)
              mae     AdamW at 5e-4 x B/256, weight decay 0.05, layer-wise lr decay 0.65,
                      5 warm-up epochs, 100 epochs, mixup 0.8, cutmix 1.0, label smoothing
                      0.1, drop path 0.1, RandAugment rand-m9-mstd0.5-inc1 + random
                      erasing 0.25 (lightly's vitb16/finetune_eval.py, MAE's settings;
                      needs timm); the flags below override single settings

images: kNN features, validation images of every mode and --no-augment features are
resized to 256 and centre-cropped to 224 at --input-size 224 (the same 0.875 crop at other
sizes above 64 px: 146 -> 128, 110 -> 96); at 64 px or less the whole image is resized to a
square (CIFAR-sized data); --resize N sets the short side before the crop.

--checkpoint also accepts two baselines:
  random:<backbone>   a randomly initialised backbone, e.g. random:resnet18 (seeded by
                      --seed); needs --input-size
  pixels              the raw pixels of the resized image as features; needs --input-size
                      (knn and linear only)

--network picks the network of a checkpoint: auto (default) the one the method's paper
evaluates (the method's eval_network): the EMA copy for DINO (its teacher), MSN and PMSN
(their target encoder) and other methods whose paper does so, the trained (online) backbone
otherwise; online the trained backbone; ema its EMA copy
(BYOL's target, MoCo's and DenseCL's key encoder, TiCo's momentum encoder, ...; lightly's
TiCo benchmark scores the EMA copy). `fastssl export` takes the same option."""


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
        "--network", choices=NETWORKS, default="auto",
        help="auto: the network the method's paper evaluates (default); online: the trained "
        "backbone; ema: its EMA copy (see above)",
    )  # fmt: skip
    parser.add_argument("--train", required=True, metavar="DIR", help="labeled training data")
    parser.add_argument("--val", required=True, metavar="DIR", help="labeled validation data")
    parser.add_argument(
        "--input-size", type=positive_int, default=None, metavar="N",
        help="image side in pixels (default: the checkpoint's training size)",
    )  # fmt: skip
    parser.add_argument(
        "--resize", type=positive_int, default=None, metavar="N",
        help="short side before the centre crop of --input-size (default: input size / "
        "0.875, 256 at 224; at 64 px or less a square resize to the input size)",
    )  # fmt: skip
    parser.add_argument(
        "--batch-size", type=positive_int, default=256, metavar="B",
        help="images per step; learning rates scale with B/256 (default 256)",
    )  # fmt: skip
    parser.add_argument(
        "--epochs", type=positive_int, default=None, metavar="E",
        help="epochs of linear (default 90) and finetune (default: the recipe's, 30 or 100)",
    )  # fmt: skip
    parser.add_argument(
        "--lr", type=positive_float, default=None,
        help="peak learning rate at batch 256, scaled by B/256: linear (default 0.1), "
        "finetune (default: the recipe's, 0.05 simclr, 5e-4 mae)",
    )  # fmt: skip
    parser.add_argument(
        "--weight-decay", type=float, default=None,
        help="linear: default 0; finetune: the recipe's (0 simclr, 0.05 mae)",
    )  # fmt: skip
    parser.add_argument(
        "--min-scale", type=positive_float, default=None, metavar="S",
        help="smallest random-resized-crop area of the training images of linear and "
        "finetune, fraction of the image (default 0.08, lightly's)",
    )  # fmt: skip
    parser.add_argument(
        "--no-augment", action="store_true",
        help="linear: train on centre-crop features extracted once (fast) instead of "
        "augmented images every epoch",
    )  # fmt: skip
    parser.add_argument(
        "--batch-norm", action=argparse.BooleanOptionalAction, default=False,
        help="linear: a BatchNorm without affine parameters before the linear layer (MAE's "
        "probe; default off, as lightly's)",
    )  # fmt: skip
    parser.add_argument(
        "--finetune-recipe", choices=RECIPES, default="auto",
        help="finetune settings (see above; default auto: mae for ViTs, else simclr)",
    )  # fmt: skip
    parser.add_argument(
        "--optimizer", choices=("sgd", "adamw"), default=None,
        help="finetune's optimizer (default: the recipe's)",
    )  # fmt: skip
    parser.add_argument(
        "--backbone-lr-scale", type=float, default=None,
        help="finetune: backbone lr = head lr x this (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--layer-decay", type=positive_float, default=None, metavar="F",
        help="finetune: layer-wise lr decay of ViT blocks (mae 0.65; 1 = off)",
    )  # fmt: skip
    parser.add_argument(
        "--warmup-epochs", type=float, default=None, metavar="E",
        help="finetune: linear lr warm-up epochs (mae 5, simclr 0)",
    )  # fmt: skip
    parser.add_argument(
        "--mixup", type=float, default=None, metavar="A",
        help="finetune: mixup alpha (mae 0.8; 0 = off)",
    )  # fmt: skip
    parser.add_argument(
        "--cutmix", type=float, default=None, metavar="A",
        help="finetune: cutmix alpha (mae 1.0; 0 = off)",
    )  # fmt: skip
    parser.add_argument(
        "--label-smoothing", type=float, default=None, metavar="S",
        help="finetune: label smoothing (mae 0.1)",
    )  # fmt: skip
    parser.add_argument(
        "--drop-path", type=float, default=None, metavar="P",
        help="finetune: stochastic depth of ViT blocks (mae 0.1; 0 = as pretrained)",
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
    network: str = "online"  # which network of the checkpoint: "online" or "ema"


def resolve_model(
    spec: str, input_size: int | None, seed: int = 0, network: str = "auto"
) -> EvalModel:
    """Builds the model named by ``--checkpoint``: a checkpoint file or a baseline.

    Args:
        spec: A checkpoint path, ``random:<backbone>`` or ``pixels``.
        input_size: Image side (default: the checkpoint's training size).
        seed: Seed of a random baseline.
        network: ``"auto"`` (the network the method's paper evaluates), ``"online"`` (the
            trained backbone) or ``"ema"`` (its EMA copy); see
            :func:`~fastssl.eval.checkpoint.select_backbone`.

    Raises:
        ValueError: For a baseline without ``input_size``, an unknown backbone, a
            checkpoint that cannot be loaded (:class:`~fastssl.eval.checkpoint.CheckpointError`),
            or ``network="ema"`` for a baseline or a method without an EMA copy.
    """
    if network not in NETWORKS:
        raise ValueError(f"--network {network!r} is unknown: choose one of {', '.join(NETWORKS)}")
    baseline = spec == "pixels" or spec.startswith("random:")
    if network == "ema" and baseline:
        raise ValueError(f"--network ema needs a checkpoint: {spec} has no EMA backbone")
    if baseline:
        if input_size is None:
            raise ValueError(f"--checkpoint {spec} needs --input-size (e.g. --input-size 32)")
        if spec == "pixels":
            return EvalModel(
                PixelFeatures(), 3 * input_size**2, input_size, "pixels", "pixels", "online"
            )
        from fastssl.models.backbones import build_backbone

        name = spec[len("random:") :]
        torch.manual_seed(seed)
        backbone, dim = build_backbone(name, input_size)
        return EvalModel(backbone.eval(), dim, input_size, "random", name, "online")
    model, info = load_method(spec)
    size = int(model.input_size) if input_size is None else input_size
    backbone, chosen = select_backbone(model, network)
    check_finite(backbone, spec)  # a diverged run: refused, not scored at chance
    return EvalModel(
        backbone, int(model.feature_dim), size, info.method, info.backbone_name, chosen
    )


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
    resize = eval_resize(model.input_size, args.resize)
    transform = eval_transform(model.input_size, args.resize)
    train = open_labeled(args.train, transform)
    val = open_labeled(args.val, transform)
    target_map = class_mapping(train.classes, val)  # fails early on unknown val classes
    num_classes = len(train.classes)
    min_scale = 0.08 if args.min_scale is None else args.min_scale
    report: dict[str, Any] = {
        "fastssl_version": __version__,
        "checkpoint": args.checkpoint,
        "network": model.network,
        "method": model.method,
        "backbone": model.backbone_name,
        "feature_dim": model.feature_dim,
        "input_size": model.input_size,
        "resize": resize,
        "train": args.train,
        "val": args.val,
        "num_train": len(train),
        "num_val": len(val),
        "num_classes": num_classes,
        "batch_size": args.batch_size,
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
        cached_train = "knn" in modes or ("linear" in modes and args.no_augment)
        train_feats = extract_features(model.backbone, train, **common) if cached_train else None
        val_feats = extract_features(model.backbone, val, target_map=target_map, **common)
        report["feature_time_s"] = round(time.perf_counter() - start, 3)
        for data, feats in ((train, train_feats), (val, val_feats)):
            if feats is not None and len(feats.features) != len(data):
                # a loader that lost or repeated samples
                raise RuntimeError(
                    f"{data.source!r}: extracted {len(feats.features)} features for "
                    f"{len(data)} samples"
                )
        if "knn" in modes:
            assert train_feats is not None
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
            results["linear"] = _linear(
                args, model, train, train_feats, val_feats, num_classes, min_scale,
                workers, device, progress,
            )  # fmt: skip
    if "finetune" in modes:
        from fastssl.eval.finetune import finetune

        start = time.perf_counter()
        overrides = {
            "epochs": args.epochs, "lr": args.lr, "optimizer": args.optimizer,
            "weight_decay": args.weight_decay, "backbone_lr_scale": args.backbone_lr_scale,
            "layer_decay": args.layer_decay, "warmup_epochs": args.warmup_epochs,
            "min_scale": args.min_scale, "mixup": args.mixup, "cutmix": args.cutmix,
            "label_smoothing": args.label_smoothing, "drop_path": args.drop_path,
        }  # fmt: skip
        recipe = finetune_recipe(args.finetune_recipe, model.backbone, **overrides)
        tuned = finetune(
            model.backbone, model.feature_dim,
            open_labeled(args.train, shuffle=True, seed=args.seed), open_labeled(args.val),
            model.input_size, recipe=recipe, batch_size=args.batch_size, num_workers=workers,
            seed=args.seed, device=device, progress=progress, resize=args.resize,
        )  # fmt: skip
        results["finetune"] = {
            "top1": tuned.top1, "top5": tuned.top5, "recipe": recipe.name,
            **{k: v for k, v in dataclasses.asdict(recipe).items() if k != "name"},
            "peak_lr": recipe.lr * args.batch_size / 256, "losses": tuned.losses,
            "time_s": round(time.perf_counter() - start, 3),
        }  # fmt: skip
    return report


def _linear(
    args: argparse.Namespace,
    model: EvalModel,
    train: Any,
    train_feats: Features | None,
    val_feats: Features,
    num_classes: int,
    min_scale: float,
    workers: int,
    device: torch.device,
    progress: bool,
) -> dict[str, Any]:
    """The linear mode: augmented images every epoch, or cached features (``--no-augment``)."""
    from fastssl.eval.linear import linear_probe, linear_probe_augmented

    start = time.perf_counter()
    base_lr = args.lr or 0.1
    settings: dict[str, Any] = {
        "epochs": args.epochs or 90,
        "lr": base_lr * args.batch_size / 256,
        "weight_decay": args.weight_decay or 0.0,
        "batch_norm": bool(args.batch_norm),
    }
    shared: dict[str, Any] = {
        "num_classes": num_classes, "seed": args.seed, "device": device, "progress": progress,
        "batch_size": args.batch_size, **settings,
    }  # fmt: skip
    if args.no_augment:
        assert train_feats is not None
        probe = linear_probe(
            train_feats.features, train_feats.labels, val_feats.features, val_feats.labels,
            **shared,
        )  # fmt: skip
    else:
        probe = linear_probe_augmented(
            model.backbone, train, val_feats.features, val_feats.labels,
            input_size=model.input_size, min_scale=min_scale, num_workers=workers,
            origin=f"--checkpoint {args.checkpoint!r}", **shared,
        )  # fmt: skip
    return {
        "top1": probe.top1, "top5": probe.top5, "best_top1": probe.best_top1,
        "best_top5": probe.best_top5, "augment": not args.no_augment,
        "min_scale": None if args.no_augment else min_scale, "base_lr": base_lr, **settings,
        "val_top1": probe.val_top1, "losses": probe.losses,
        "time_s": round(time.perf_counter() - start, 3),
    }  # fmt: skip


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
