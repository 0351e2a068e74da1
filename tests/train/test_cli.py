from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fastssl.cli import main
from fastssl.train.checkpoint import method_state_dict, read_checkpoint
from fastssl.train.config import PretrainConfig
from tests.train._tiny import TINY, make_folder

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "pipelines").glob("*.yaml"))
METHODS = [
    "aim", "barlowtwins", "byol", "dcl", "dclw", "densecl", "dino", "mae", "moco", "msn",
    "nnclr", "pmsn", "simclr", "simmim", "simsiam", "swav", "tico", "vicreg",
]  # fmt: skip


#: Smaller heads for the 2-step CPU runs (the backbone is shrunk for every method).
TINY_HEADS: dict[str, list[str]] = {
    "aim": ["head_hidden_dim=32", "head_num_blocks=1"],
    "mae": ["decoder_dim=32", "decoder_depth=1", "decoder_num_heads=2"],
    "msn": ["hidden_dim=32", "output_dim=16", "n_prototypes=8", "focal_views=2"],
    "pmsn": ["hidden_dim=32", "output_dim=16", "n_prototypes=8", "focal_views=2"],
    "dino": ["hidden_dim=32", "bottleneck_dim=16", "output_dim=64", "n_local_views=2"],
}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("images"), n=16, size=40)


def _recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "method": TINY,
                "data": {"input_size": 8, "num_workers": 0, "batch_size": 8},
                "trainer": {"accelerator": "cpu", "log_every_n_steps": 1},
            }
        )
    )
    return path


def test_every_method_has_a_recipe() -> None:
    assert [p.stem for p in RECIPES] == METHODS


@pytest.mark.parametrize("name", METHODS)
def test_recipe_trains_two_steps(name: str, images: Path, tmp_path: Path) -> None:
    recipe = yaml.safe_load((ROOT / "pipelines" / f"{name}.yaml").read_text())
    assert recipe["method"] == name
    for key in ("lr", "weight_decay", "name", "reference_batch_size"):
        assert recipe["optimizer"][key] is not None
    assert recipe["data"]["input_size"] == 224 and recipe["trainer"]["max_epochs"] >= 100
    backbone = recipe["method_kwargs"]["backbone"]
    tiny = "timm:vit_tiny_patch16_224" if "vit" in backbone else "resnet18"
    out = tmp_path / "out"
    code = main(
        [
            "pretrain", str(ROOT / "pipelines" / f"{name}.yaml"), "--data", str(images),
            "--input-size", "32", "--batch-size", "4", "--max-steps", "2", "--accelerator",
            "cpu", "--precision", "32", "--no-compile", "--out", str(out),
            "--num-workers", "0", "--set", f"method_kwargs.backbone={tiny}",
            *(f"--set=method_kwargs.{kv}" for kv in TINY_HEADS.get(name, [])),
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == name and summary["steps"] == 2
    assert torch.isfinite(torch.tensor(summary["final_loss"]))
    hparams = read_checkpoint(out / "last.ckpt")["hyper_parameters"]
    assert hparams["method"] == name and hparams["method_kwargs"]["backbone"] == tiny


def test_cli_errors_exit_2_with_message(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _recipe(tmp_path)
    assert main(["pretrain", str(recipe), "--data", str(images), "--set", "trainer.sed=1"]) == 2
    assert "unknown key 'trainer.sed' (did you mean 'trainer.seed'?)" in capsys.readouterr().err
    assert main(["pretrain", str(recipe), "--data", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    args = ["pretrain", str(recipe), "--data", str(images), "--set", "method_kwargs.nan_at_step=0"]
    assert main([*args, "--out", str(tmp_path / "nan")]) == 1
    assert "the loss is nan at step 0" in capsys.readouterr().err


def test_help_lists_every_recipe_section(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    lines = capsys.readouterr().out.splitlines()
    sections = [f.name for f in dataclasses.fields(PretrainConfig)]
    listed = [line.split()[0] for line in lines if line.startswith("  ") and line.split()]
    assert all(section in listed for section in sections), (sections, listed)


@pytest.mark.dist
def test_two_processes_match_one_process_on_the_global_batch(images: Path, tmp_path: Path) -> None:
    """gloo DDP, 2 processes x 4 images (sync BN, gathered NT-Xent) == 1 process x 8 images.

    Deterministic by construction: TinyMethod's default transform has no randomness
    (resize; resize + flip), and each rank reads a disjoint half of the same seeded
    permutation, so both runs train on the same 8 images per step. Sync BatchNorm and
    the gather make the loss and its gradient independent of how the batch is split.
    """
    recipe = _recipe(tmp_path)
    common = [
        "pretrain", str(recipe), "--data", str(images), "--batch-size", "8", "--max-epochs",
        "2", "--accelerator", "cpu", "--seed", "5",
    ]  # fmt: skip
    assert main([*common, "--devices", "1", "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "fastssl", *common, "--devices", "2", "--out", f"{tmp_path}/two"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one = method_state_dict(read_checkpoint(tmp_path / "one" / "last.ckpt"))
    two = method_state_dict(read_checkpoint(tmp_path / "two" / "last.ckpt"))
    for key in one:
        torch.testing.assert_close(two[key].float(), one[key].float(), atol=1e-5, rtol=0, msg=key)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    start = read_checkpoint(tmp_path / "one" / "last.ckpt")
    assert not torch.equal(start["state_dict"]["method.head.weight"], torch.zeros(8, 8))
