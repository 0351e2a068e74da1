"""Every method learns: each registered method pretrained on Fashion-MNIST by its
small-image recipe, scored by ``fastssl eval`` beside honest baselines.

For every method with a recipe in ``pipelines/fashion_mnist/`` (``--methods``: all by
default), ``fastssl pretrain`` trains on the training images for ``--epochs`` (10, the
recipes' budget; batch 256 but where a recipe says why, 32 px), then ``fastssl eval knn
linear`` scores the network the method's paper evaluates on the test images: weighted kNN
(k=200, t=0.1, the bank being the training images) and a linear probe on frozen
centre-crop features (``--no-augment``: 90 epochs of SGD on features extracted once; the
masked-image methods MAE, SimMIM, AIM, CAPI and I-JEPA are judged by it, the others by
kNN). The collapse statistics of the final network on the test images (std of the
L2-normalised features, effective rank; see ``fastssl.utils.collapse``) and the online
ones of the last training step (``summary.json``) are reported too.

Baselines, per backbone the selected recipes use, scored by the same ``fastssl eval``
command:

* ``random``: the backbone, seeded and untrained, scored through the features the methods
  give it (a plain CNN: pooled features, as the dense methods' trunks; a ViT in MAE's
  masked wrapper: its class token, or its patch average when the backbone says
  ``global_pool=avg``; AIM's prefix-causal ViT and I-JEPA's encoder, which have no class
  token and pool their patches, baselines of their own: I-JEPA's with its own
  initialisation and sine-cosine positions). A ResNet is initialised as torchvision
  initialises its ResNets (Kaiming-normal convolutions, BatchNorm weight 1 and bias 0, no
  zeroed residual branch): timm zero-initialises the last BatchNorm of every block, which
  scores far below (0.257 against 0.726 in benchmarks/fashion_mnist.md). A ViT keeps
  timm's initialisation (truncated normal 0.02, no zeroed branch), the standard one.
* ``supervised``: the same backbone trained with the labels for the same epochs by
  ``benchmarks/fashion_mnist_supervised.py`` (ResNets: SGD lr 0.1; ViTs: AdamW lr 1e-3,
  weight decay 0.05, as the ViT recipes).
* ``raw pixels``: the 32 px image itself (``fastssl eval --checkpoint pixels``).

The data: ``tools/prepare_fashion_mnist.py`` writes the first ``--train`` / ``--test``
images of each split (the issue's data; ``--random-subset`` takes a seeded random subset),
or ``--data`` names a prepared folder. Prints a Markdown table and writes the JSON to
``--out`` (rewritten after every row, so a long run keeps what it measured) and the table
beside it (``.md``). A run that fails is reported with its error, and the others go on.

Usage: python benchmarks/methods_fashion_mnist.py [--methods all|NAME,NAME] [--epochs 10]
    [--train 10000] [--test 2000] [--seed 0] [--random-subset] [--data DIR]
    [--baselines random,pixels,supervised|none] [--workers 2] [--keep DIR] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pretrain_epoch import write_report  # noqa: E402

from fastssl import methods  # noqa: E402
from fastssl.eval.checkpoint import select_backbone  # noqa: E402
from fastssl.eval.features import (  # noqa: E402
    PixelFeatures,
    eval_transform,
    extract_features,
    open_labeled,
)
from fastssl.methods._vit import is_vit  # noqa: E402
from fastssl.methods.base import Method  # noqa: E402
from fastssl.train.checkpoint import load_method  # noqa: E402
from fastssl.utils.collapse import collapse_statistics  # noqa: E402

RECIPES = ROOT / "pipelines" / "fashion_mnist"
INPUT_SIZE = 32
#: Methods whose paper judges them by a linear probe (their kNN accuracy is known to be
#: poor): the masked-image methods.
MASKED = frozenset({"mae", "simmim", "aim", "capi", "ijepa"})
#: Joint-embedding methods must also beat the raw pixels (the issue's goal).
BASELINES = ("random", "pixels", "supervised")
#: Settings of the supervised baseline for ViTs (as the ViT recipes' optimizer).
VIT_SUPERVISED = ["--optimizer", "adamw", "--lr", "0.001", "--weight-decay", "0.05"]
COLUMNS = (
    ("name", "run"),
    ("backbone", "backbone"),
    ("epochs", "epochs"),
    ("wall_s", "wall s"),
    ("images_per_s", "images/s"),
    ("knn_top1", "kNN top-1"),
    ("linear_top1", "linear top-1"),
    ("collapse_std", "std"),
    ("effective_rank", "eff. rank"),
    ("online_std", "online std"),
    ("online_effective_rank", "online rank"),
    ("goal", "goal"),
)


def recipe_methods(selected: str) -> list[str]:
    """The methods to run: every one with a recipe (``"all"``) or the named ones.

    Raises:
        ValueError: For a name without a recipe (naming the ones there are).
    """
    available = sorted(path.stem for path in RECIPES.glob("*.yaml"))
    if selected.strip() == "all":
        return available
    names = [name.strip() for name in selected.split(",") if name.strip()]
    missing = [name for name in names if name not in available]
    if missing:
        raise ValueError(
            f"no recipe in {RECIPES} for {', '.join(missing)}; there are: {', '.join(available)}"
        )
    return names


def load_recipe(method: str) -> dict[str, Any]:
    """The YAML recipe ``pipelines/fashion_mnist/<method>.yaml`` as a mapping."""
    recipe: dict[str, Any] = yaml.safe_load((RECIPES / f"{method}.yaml").read_text())
    return recipe


def torchvision_init_(module: nn.Module) -> nn.Module:
    """Initialises ``module`` in place as torchvision initialises its ResNets.

    Convolutions: Kaiming normal (fan out, ReLU); BatchNorm and GroupNorm: weight 1, bias
    0 (``zero_init_residual=False``: no residual branch starts at zero); linear layers:
    PyTorch's default. Running statistics are reset.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
            if isinstance(layer, nn.BatchNorm2d):
                layer.reset_running_stats()
        elif isinstance(layer, nn.Linear):
            layer.reset_parameters()
    return module


#: The method a baseline's backbone is wrapped in for ``fastssl eval``, with small heads
#: (the heads are not scored): SimCLR's plain backbone for CNNs, MAE's masked ViT for ViTs
#: (its features are the ViT's own: the class token, or the patch average when the
#: backbone says ``global_pool=avg``).
WRAPPER_KWARGS: dict[str, dict[str, Any]] = {
    "simclr": {"hidden_dim": 512, "output_dim": 128},
    "mae": {"decoder_dim": 64, "decoder_depth": 1, "decoder_num_heads": 2},
}

#: Methods whose scored network is one of their own, so that their random initialisation
#: is a baseline of its own (:func:`baseline_wrapper`): AIM's prefix-causal ViT and
#: I-JEPA's encoder (its own initialisation, sine-cosine positions, no class token) pool
#: their patch tokens.
OWN_NETWORKS = ("aim", "ijepa")


def canonical_wrapper(backbone: str) -> str:
    """``"mae"`` for a ViT backbone, else ``"simclr"``."""
    return "mae" if is_vit(backbone) else "simclr"


def baseline_wrapper(method: str, backbone: str) -> str:
    """The wrapper whose scored network is ``method``'s at initialisation: AIM's and
    I-JEPA's own (:data:`OWN_NETWORKS`), else :func:`canonical_wrapper` (the dense methods'
    trunks and the other masked ViT wrappers give the plain backbone's features)."""
    return method if method in OWN_NETWORKS else canonical_wrapper(backbone)


def wrapper_kwargs(wrapper: str, backbone: str) -> dict[str, Any]:
    """Constructor arguments of ``wrapper`` around ``backbone`` at 32 px."""
    if wrapper in WRAPPER_KWARGS:
        return {"backbone": backbone, **WRAPPER_KWARGS[wrapper], "input_size": INPUT_SIZE}
    recipe = load_recipe(wrapper).get("method_kwargs", {})
    return {**recipe, "backbone": backbone, "input_size": INPUT_SIZE}


def baseline_name(kind: str, backbone: str, wrapper: str) -> str:
    """The table's name of a baseline, e.g. ``"random (timm:resnet18)"``."""
    own = "" if wrapper in WRAPPER_KWARGS else f", {wrapper}'s network"
    return f"{kind} ({backbone}{own})"


def build_wrapper(wrapper: str, backbone: str, seed: int) -> Method:
    """``wrapper`` around ``backbone`` (:func:`wrapper_kwargs`), seeded."""
    torch.manual_seed(seed)
    return methods.create(wrapper, **wrapper_kwargs(wrapper, backbone))


def scored_network(model: Method) -> nn.Module:
    """The network ``fastssl eval`` scores by default (``--network auto``)."""
    return select_backbone(model)[0]


def save_checkpoint(model: Method, wrapper: str, backbone: str, path: Path) -> Path:
    """Writes ``model`` as a checkpoint ``fastssl eval`` reads (the engine's contract:
    ``hyper_parameters`` method and method_kwargs, ``"method."`` weights)."""
    hparams = {"method": wrapper, "method_kwargs": wrapper_kwargs(wrapper, backbone)}
    state = {f"method.{key}": value for key, value in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper_parameters": hparams, "state_dict": state}, path)
    return path


def random_init_checkpoint(wrapper: str, backbone: str, seed: int, path: Path) -> Path:
    """A checkpoint whose scored network is ``backbone`` at random initialisation:
    as the wrapper builds a ViT (timm's initialisation; I-JEPA's own for its network),
    torchvision's for every other backbone (see the module docstring)."""
    model = build_wrapper(wrapper, backbone, seed)
    if not is_vit(backbone):
        torch.manual_seed(seed)
        torchvision_init_(scored_network(model))
    return save_checkpoint(model, wrapper, backbone, path)


def backbone_checkpoint(backbone: str, weights: Path, seed: int, path: Path) -> Path:
    """A checkpoint whose scored network holds ``weights``, a state dict of ``backbone``
    trained elsewhere (with the labels, or by LightlySSL's example code); a ViT's go into
    MAE's masked wrapper's ``vit``."""
    wrapper = canonical_wrapper(backbone)
    model = build_wrapper(wrapper, backbone, seed)
    network = scored_network(model)
    target = getattr(network, "vit", network)
    target.load_state_dict(torch.load(weights, weights_only=True))
    return save_checkpoint(model, wrapper, backbone, path)


def run(command: Sequence[str], log: Path) -> float:
    """Runs ``command`` (output to ``log``); returns its wall seconds.

    Raises:
        RuntimeError: If it fails, with the end of its output.
    """
    start = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(list(command), stdout=handle, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = log.read_text()[-1500:]
        raise RuntimeError(f"{' '.join(command[:4])} ... exited {done.returncode}:\n{tail}")
    return wall


def fastssl_eval(checkpoint: str, data: Path, out: Path, workers: int, seed: int) -> dict[str, Any]:
    """``fastssl eval knn linear`` (linear on centre-crop features) on ``data``/test with
    ``data``/train as kNN bank and probe training set; returns the report."""
    report = out / "eval.json"
    command = [
        sys.executable, "-m", "fastssl", "eval", "knn", "linear", "--checkpoint", checkpoint,
        "--train", str(data / "train"), "--val", str(data / "test"),
        "--input-size", str(INPUT_SIZE), "--no-augment", "--workers", str(workers),
        "--seed", str(seed), "--quiet", "--json", str(report),
    ]  # fmt: skip
    run(command, out / "eval.log")
    result: dict[str, Any] = json.loads(report.read_text())
    return result


def test_collapse(network: nn.Module, data: Path, workers: int) -> dict[str, float]:
    """Collapse statistics of ``network``'s features of the test images."""
    test = open_labeled(data / "test", eval_transform(INPUT_SIZE))
    features = extract_features(network, test, batch_size=256, num_workers=workers)
    return collapse_statistics(features.features)


def score(
    row: dict[str, Any],
    checkpoint: str,
    network: nn.Module,
    data: Path,
    out: Path,
    args: argparse.Namespace,
) -> None:
    """Fills ``row`` with ``fastssl eval``'s accuracies and the test collapse statistics."""
    report = fastssl_eval(checkpoint, data, out, args.workers, args.seed)
    results = report["results"]
    row["knn_top1"] = results["knn"]["top1"]
    row["linear_top1"] = results["linear"]["top1"]
    row["network"] = report.get("network")
    stats = test_collapse(network, data, args.workers)
    row["collapse_std"], row["effective_rank"] = stats["std"], stats["effective_rank"]


def score_checkpoint(
    row: dict[str, Any], checkpoint: Path, data: Path, out: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """:func:`score` of ``checkpoint``'s scored network (``fastssl eval``'s default one),
    its files in ``out``; returns ``row``."""
    out.mkdir(parents=True, exist_ok=True)
    score(row, str(checkpoint), scored_network(load_method(checkpoint)), data, out, args)
    return row


def recipe_command(method: str, data: Path, out: Path, args: argparse.Namespace) -> list[str]:
    """``fastssl pretrain`` of ``method``'s small-image recipe on ``data``/train for
    ``args.epochs`` (seed, loader workers from ``args``), into a fresh ``out``."""
    return [
        sys.executable, "-m", "fastssl", "pretrain", str(RECIPES / f"{method}.yaml"),
        "--data", str(data / "train"), "--max-epochs", str(args.epochs),
        "--seed", str(args.seed), "--out", str(out), "--num-workers", str(args.workers),
        "--logger", "csv", "--resume", "never", "--overwrite",
    ]  # fmt: skip


def pretrain_method(method: str, data: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Pretrains ``method`` by its recipe and scores it; the row of the table."""
    recipe = load_recipe(method)
    backbone = recipe["method_kwargs"]["backbone"]
    row: dict[str, Any] = {
        "name": method,
        "kind": "method",
        "method": method,
        "backbone": backbone,
        "epochs": args.epochs,
        "batch_size": recipe["data"]["batch_size"],
        "judged_by": "linear_top1" if method in MASKED else "knn_top1",
        "random_baseline": baseline_name("random", backbone, baseline_wrapper(method, backbone)),
    }
    out.mkdir(parents=True, exist_ok=True)
    row["wall_s"] = run(recipe_command(method, data, out, args), out / "pretrain.log")
    summary = json.loads((out / "summary.json").read_text())
    row.update(
        images_per_s=summary["images_per_s"],
        train_s=summary["train_s"],
        steps=summary["steps"],
        final_loss=summary["final_loss"],
        precision=summary["precision"],
        online_std=summary.get("collapse_std"),
        online_effective_rank=summary.get("collapse_effective_rank"),
    )
    return score_checkpoint(row, out / "last.ckpt", data, out, args)


def baseline_rows(
    kind: str,
    networks: Sequence[tuple[str, str]],
    data: Path,
    work: Path,
    args: argparse.Namespace,
) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """The baseline runs of ``kind`` as (name, thunk) pairs: one per (backbone, wrapper) of
    ``networks`` (``"random"``, ``"supervised"``), or one for the pixels."""
    if kind == "pixels":

        def pixels() -> dict[str, Any]:
            row: dict[str, Any] = {"name": "raw pixels", "kind": "pixels", "backbone": "pixels"}
            out = work / "pixels"
            out.mkdir(parents=True, exist_ok=True)
            score(row, "pixels", PixelFeatures(), data, out, args)
            return row

        return [("raw pixels", pixels)]
    thunks: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    for index, (backbone, wrapper) in enumerate(networks):
        name = baseline_name(kind, backbone, wrapper)
        out = work / f"{kind}-{index}"
        row: dict[str, Any] = {"name": name, "kind": kind, "backbone": backbone, "wrapper": wrapper}
        thunks.append((name, partial(_baseline, kind, row, data, out, args)))
    return thunks


def _baseline(
    kind: str, row: dict[str, Any], data: Path, out: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Builds (random) or trains (supervised) the baseline of ``row`` and scores it."""
    out.mkdir(parents=True, exist_ok=True)
    backbone, checkpoint = row["backbone"], out / "baseline.ckpt"
    if kind == "random":
        random_init_checkpoint(row["wrapper"], backbone, args.seed, checkpoint)
    else:
        weights = out / "backbone.pt"
        command = [
            sys.executable, str(ROOT / "benchmarks" / "fashion_mnist_supervised.py"),
            "--data", str(data), "--epochs", str(args.epochs), "--backbone", backbone,
            "--num-workers", str(args.workers), "--seed", str(args.seed),
            "--save-backbone", str(weights), "--out", str(out / "supervised.json"),
            *(VIT_SUPERVISED if is_vit(backbone) else []),
        ]  # fmt: skip
        row["epochs"] = args.epochs
        row["wall_s"] = run(command, out / "supervised.log")
        report = json.loads((out / "supervised.json").read_text())
        row["classifier_top1"] = report["classifier_top1"]
        backbone_checkpoint(backbone, weights, args.seed, checkpoint)
    return score_checkpoint(row, checkpoint, data, out, args)


def judge(rows: list[dict[str, Any]]) -> None:
    """Sets each method row's ``goal``: its judged accuracy above its backbone's random
    init by at least 2 points, and (joint-embedding methods) above the raw pixels."""
    random = {r["name"]: r for r in rows if r.get("kind") == "random" and "error" not in r}
    pixels = next((r for r in rows if r.get("kind") == "pixels" and "error" not in r), None)
    for row in rows:
        if row.get("kind") != "method" or "error" in row:
            continue
        metric = row["judged_by"]
        notes = []
        base = random.get(row["random_baseline"])
        if base is not None:
            margin = 100 * (row[metric] - base[metric])
            row["vs_random_init_points"] = margin
            notes.append(f"{margin:+.1f} vs init" + ("" if margin >= 2 else " (< 2)"))
        if pixels is not None and row["method"] not in MASKED:
            margin = 100 * (row[metric] - pixels[metric])
            row["vs_pixels_points"] = margin
            notes.append(f"{margin:+.1f} vs pixels")
        passed = row.get("vs_random_init_points", 2.0) >= 2 and row.get("vs_pixels_points", 1.0) > 0
        row["goal"] = ("met" if passed else "missed") + (f": {', '.join(notes)}" if notes else "")


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if key in ("knn_top1", "linear_top1"):
            return f"{value:.4f}"
        if key in ("collapse_std", "online_std"):
            return f"{value:.4f}"
        if key in ("effective_rank", "online_effective_rank", "images_per_s"):
            return f"{value:.1f}"
        return f"{value:.0f}"
    return str(value)


def ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Methods first (in run order), then the baselines."""
    return sorted(rows, key=lambda row: row.get("kind", "method") != "method")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table, methods first (the judged accuracy of each method in
    bold)."""
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in ordered(rows):
        if "error" in row:
            cells = [
                row["name"],
                row.get("backbone", ""),
                f"failed: {row['error'].splitlines()[0]}",
            ]
            cells += [""] * (len(COLUMNS) - len(cells))
        else:
            cells = []
            for key, _ in COLUMNS:
                text = _cell(key, row.get(key))
                if text and key == row.get("judged_by"):
                    text = f"**{text}**"
                cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def prepare_data(args: argparse.Namespace, work: Path) -> Path:
    """The data folder: ``--data``, or Fashion-MNIST written by tools/prepare_fashion_mnist.py."""
    if args.data is not None:
        return Path(args.data)
    data = work / "fashion-mnist"
    subset = ["--seed", str(args.seed)] if args.random_subset else ["--first"]
    command = [
        sys.executable, str(ROOT / "tools" / "prepare_fashion_mnist.py"), str(data),
        "--train", str(args.train), "--test", str(args.test), *subset,
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return data


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--methods", default="all",
        help="comma-separated methods with a recipe in pipelines/fashion_mnist/ (default all)",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every run (10)")
    parser.add_argument("--train", type=int, default=10_000, help="training images (10,000)")
    parser.add_argument("--test", type=int, default=2_000, help="test images (2,000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (0)")
    parser.add_argument(
        "--random-subset", action="store_true",
        help="a seeded random subset of each split instead of its first images",
    )  # fmt: skip
    parser.add_argument(
        "--data", default=None, help="a prepared folder with train/ and test/ (skips preparing)"
    )
    parser.add_argument(
        "--baselines", default=",".join(BASELINES),
        help=f"comma-separated subset of {', '.join(BASELINES)}, or none (default: all)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="loader workers (2)")
    parser.add_argument(
        "--keep", default=None, help="keep checkpoints and logs in this folder (default: temporary)"
    )
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks/results/methods_fashion_mnist.json"),
        help="JSON report; the Markdown table goes beside it (.md)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    chosen = [b.strip() for b in args.baselines.split(",") if b.strip() and b.strip() != "none"]
    unknown = sorted(set(chosen) - set(BASELINES))
    if unknown:
        parser.error(f"--baselines: unknown {unknown}; choose from {', '.join(BASELINES)}")
    args.baselines = [b for b in BASELINES if b in chosen]
    try:
        args.methods = recipe_methods(args.methods)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fastssl-methods-fmnist-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = prepare_data(args, work)
        load_before = os.getloadavg()
        networks: list[tuple[str, str]] = []  # (backbone, wrapper) of the random inits
        for method in args.methods:
            backbone = load_recipe(method)["method_kwargs"]["backbone"]
            if (backbone, baseline_wrapper(method, backbone)) not in networks:
                networks.append((backbone, baseline_wrapper(method, backbone)))
        backbones = list(dict.fromkeys(backbone for backbone, _ in networks))
        supervised = [(backbone, canonical_wrapper(backbone)) for backbone in backbones]
        # The quick baselines first, so every method's goal shows as it finishes.
        jobs: list[tuple[str, Callable[[], dict[str, Any]]]] = []
        for kind in ("random", "pixels"):
            if kind in args.baselines:
                jobs += baseline_rows(kind, networks, data, work, args)
        jobs += [
            (method, partial(pretrain_method, method, data, work / method, args))
            for method in args.methods
        ]
        if "supervised" in args.baselines:
            jobs += baseline_rows("supervised", supervised, data, work, args)
        start = time.perf_counter()
        for name, job in jobs:
            print(f"== {name}", flush=True)
            try:
                row = job()
            except Exception as error:  # one failed run is reported; the others go on
                row = {"name": name, "error": f"{type(error).__name__}: {error}"}
                print(f"   failed: {error}", flush=True)
            rows.append(row)
            judge(rows)
            summary = {k: row.get(k) for k in ("knn_top1", "linear_top1", "wall_s")}
            print(f"   {summary}", flush=True)
            write(args, rows, (load_before, os.getloadavg()), time.perf_counter() - start)
    table = markdown_table(rows)
    print(table)
    print(f"written to {args.out} and {Path(args.out).with_suffix('.md')}")
    return 1 if any("error" in row for row in rows) else 0


def write(
    args: argparse.Namespace, rows: list[dict[str, Any]], load: tuple[Any, Any], total_s: float
) -> None:
    """Writes the JSON report and the Markdown table (after every row)."""
    setup = {
        "methods": args.methods,
        "epochs": args.epochs,
        "train": args.train if args.data is None else f"--data {args.data}",
        "test": args.test if args.data is None else f"--data {args.data}",
        "subset": "first" if not args.random_subset else f"random, seed {args.seed}",
        "seed": args.seed,
        "batch_size": "each recipe's (256 but where it says why; every row's batch_size)",
        "input_size": INPUT_SIZE,
        "recipes": "pipelines/fashion_mnist/<method>.yaml",
        "eval": "fastssl eval knn linear --no-augment (kNN k=200 t=0.1; linear: 90 epochs "
        "of SGD on centre-crop features); the masked-image methods judged by linear",
        "baselines": args.baselines,
        "total_s": total_s,
    }
    write_report(args.out, setup, {row["name"]: row for row in ordered(rows)}, load)
    Path(args.out).with_suffix(".md").write_text(markdown_table(rows) + "\n")


if __name__ == "__main__":
    sys.exit(main())
