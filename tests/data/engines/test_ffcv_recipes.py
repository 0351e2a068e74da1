"""Every registered method trains 2 steps from a ``.beton`` under ``--backend ffcv``.

Methods whose transform is built from ViewSpecs run on the FFCV engine (one pass per image,
every view made in FFCV's compiled decoder); the others (views made per sample, with grids
or masks: DetCon, VICRegL) fall back to torch workers calling the transform on the
``.beton``'s images, which the run reports as a fallback. ``--backend auto`` picks FFCV
for a ``.beton``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from fastssl.cli import main
from fastssl.methods import list_methods
from fastssl.train.checkpoint import read_checkpoint
from tests.train._tiny import make_folder

pytest.importorskip("ffcv")

from fastssl.data.shards import ShardSettings, convert

pytestmark = pytest.mark.ffcv

ROOT = Path(__file__).resolve().parents[3]
#: The issue's recipes that must train on the FFCV engine itself (no fallback).
FFCV_RECIPES = {
    "barlowtwins", "byol", "dcl", "dclw", "densecl", "dino", "mae", "moco", "msn", "nnclr",
    "pmsn", "simclr", "simmim", "simsiam", "swav", "tico", "vicreg",
}  # fmt: skip
#: Smaller heads for the 2-step CPU runs (as tests/train/test_cli.py).
TINY_HEADS: dict[str, list[str]] = {
    "aim": ["head_hidden_dim=32", "head_num_blocks=1"],
    # 8192-wide projectors write 1.2 GB checkpoints: two steps need no such width.
    "barlowtwins": ["hidden_dim=64", "output_dim=64"],
    "vicreg": ["hidden_dim=64", "output_dim=64"],
    "mae": ["decoder_dim=32", "decoder_depth=1", "decoder_num_heads=2"],
    "msn": ["hidden_dim=32", "output_dim=16", "n_prototypes=8", "focal_views=2"],
    "pmsn": ["hidden_dim=32", "output_dim=16", "n_prototypes=8", "focal_views=2"],
    "dino": ["hidden_dim=32", "bottleneck_dim=16", "output_dim=64", "n_local_views=2"],
    "dinov2": ["hidden_dim=32", "bottleneck_dim=16", "output_dim=64", "n_local_views=2"],
    "capi": ["num_clusters=64", "predictor_depth=1", "predictor_num_heads=2"],
    "vicregl": ["hidden_dim=64", "output_dim=64", "n_local_views=2"],
    "mmcr": ["hidden_dim=32", "output_dim=16"],
    "smog": ["hidden_dim=64", "n_groups=16", "memory_bank_size=64"],
    "wmse": ["hidden_dim=32", "output_dim=2", "w_size=4"],
    "ijepa": ["predictor_embed_dim=32", "predictor_depth=1", "predictor_num_heads=2", "min_keep=1"],
    "lejepa": ["hidden_dim=32", "output_dim=16", "n_local_views=2", "sigreg_num_vectors=16"],
}
VIT = "timm:vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def beton(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("recipes")
    make_folder(root / "images", n=16, size=40)
    convert(root / "images", root / "beton", ShardSettings(format="ffcv"), workers=1)
    return root / "beton"


def _recipe(name: str, tmp_path: Path) -> tuple[Path, str]:
    """The method's recipe (a minimal one for methods without a file) and its tiny backbone."""
    path = ROOT / "pipelines" / f"{name}.yaml"
    if path.exists():
        backbone = yaml.safe_load(path.read_text())["method_kwargs"]["backbone"]
        return path, VIT if "vit" in backbone else "resnet18"
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"method": name, "method_kwargs": {}}))
    return path, VIT


def test_the_issue_recipes_are_registered() -> None:
    assert set(list_methods()) >= FFCV_RECIPES
    assert all((ROOT / "pipelines" / f"{name}.yaml").exists() for name in FFCV_RECIPES)


@pytest.mark.parametrize("name", list_methods())
def test_method_trains_two_steps_from_a_beton(
    name: str, beton: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe, backbone = _recipe(name, tmp_path)
    out = tmp_path / "out"
    size = "96" if name == "ijepa" else "32"  # I-JEPA's blocks need a larger patch grid
    code = main(
        [
            "pretrain", str(recipe), "--data", str(beton), "--backend", "ffcv",
            "--input-size", size, "--batch-size", "4", "--max-steps", "2", "--accelerator",
            "cpu", "--precision", "32", "--no-compile", "--out", str(out), "--num-workers", "1",
            "--set", f"method_kwargs.backbone={backbone}",
            *(f"--set=method_kwargs.{kv}" for kv in TINY_HEADS.get(name, [])),
        ]
    )  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == name and summary["steps"] == 2
    assert torch.isfinite(torch.tensor(summary["final_loss"]))
    hparams = read_checkpoint(out / "last.ckpt")["hyper_parameters"]
    assert hparams["method"] == name
    line = next(ln for ln in printed.out.splitlines() if ln.strip().startswith("data backend"))
    if name in FFCV_RECIPES:
        assert line.split()[2] == "ffcv", line
    else:  # FFCV, or the announced per-sample fallback for transforms without ViewSpecs
        assert line.split()[2] == "ffcv" or "not built from ViewSpecs" in line, line


def test_auto_picks_ffcv_for_a_beton(
    beton: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "pretrain", str(ROOT / "pipelines" / "simclr.yaml"), "--data", str(beton),
            "--input-size", "32", "--batch-size", "4", "--max-steps", "1", "--accelerator",
            "cpu", "--precision", "32", "--no-compile", "--out", str(tmp_path / "out"),
            "--num-workers", "1", "--set", "method_kwargs.backbone=resnet18",
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "data backend  ffcv (a .beton is read by FFCV)" in printed
