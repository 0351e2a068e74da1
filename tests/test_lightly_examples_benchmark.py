"""benchmarks/lightly_examples_fashion_mnist.py: LightlySSL 1.6's example loops run as the
benchmark runs them (one short epoch on a small folder), their backbones load into the
network the shared kNN scores (CAPI's, MSN's, PMSN's and DINOv2's ViT into the checkpoint
`fastssl eval` scores), and the table and arguments behave."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from lightly.models.modules import MaskedVisionTransformerTIMM
from PIL import Image
from torch import nn

from fastssl.eval.checkpoint import select_backbone
from fastssl.models.backbones import build_backbone, parse_timm_name
from fastssl.train.checkpoint import load_method
from tests._benchmarks import load_benchmark

bench = load_benchmark("lightly_examples_fashion_mnist")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 random 28 px grayscale PNGs: one batch of the examples' 256."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index in range(256):
        pixels = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(root / f"{index:03d}.png")
    return root


@pytest.fixture(scope="module")
def half_folder(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 128 of :func:`folder`'s images: two batches of 64, for DINOv2's example,
    a step of which takes about 9 s on a 2-core CPU."""
    root = tmp_path_factory.mktemp("half")
    for path in sorted(folder.iterdir())[:128]:
        shutil.copy(path, root / path.name)
    return root


def run_example(method: str, folder: Path, weights: Path) -> dict[str, torch.Tensor]:
    """Runs ``method``'s example as the benchmark does (0 workers, 1 epoch, seed 0, float32);
    returns the state dict it saved to ``weights``."""
    program = textwrap.dedent(bench.EXAMPLE_HEAD) + textwrap.dedent(bench.EXAMPLES[method])
    done = subprocess.run(
        [sys.executable, "-c", program, str(folder), "0", "1", "0", str(weights), "32-true"],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "epoch 0 loss" in done.stdout
    saved: dict[str, torch.Tensor] = torch.load(weights, weights_only=True)
    return saved


@pytest.mark.parametrize("method", sorted(set(bench.EXAMPLES) - bench.VIT_EXAMPLES))
def test_example_trains_and_saves_a_backbone_the_scored_network_loads(
    method: str, folder: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "backbone.pt"
    saved = run_example(method, folder, weights)
    network = bench.torchvision_resnet18(weights)
    assert set(network.state_dict()) == set(saved)  # strict load: every key used
    # The example seeds its backbone as torchvision_resnet18(seed=0) does; its training
    # moved the weights away from that initialisation.
    untrained = bench.torchvision_resnet18(seed=0)
    assert not torch.equal(network[0].weight, untrained[0].weight)
    assert network(torch.randn(2, 3, 32, 32)).shape == (2, 512)


@pytest.mark.parametrize("method", sorted(bench.VIT_EXAMPLES))
def test_vit_example_saves_the_recipes_vit_which_the_scored_checkpoint_holds(
    method: str, folder: Path, half_folder: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "vit.pt"
    saved = run_example(method, half_folder if method == "dinov2" else folder, weights)
    backbone = bench.example_backbone(method)
    # strict load into the ViT fastssl builds for the recipe (raises on a key or shape)
    path = bench.backbone_checkpoint(backbone, weights, 0, tmp_path / "example.ckpt")
    network = select_backbone(load_method(path))[0]
    held = network.vit.state_dict()
    assert set(held) == set(saved)
    for key, value in saved.items():
        torch.testing.assert_close(held[key], value)
    # The example seeds its ViT as here and LightlySSL's masked wrapper re-initialises it
    # (DINOv2's all but its position embedding).
    torch.manual_seed(0)
    untrained = build_backbone(backbone, 32)[0]
    wrapper_kwargs = {"antialias": False, "pos_embed_initialization": "skip"}
    MaskedVisionTransformerTIMM(vit=untrained, **(wrapper_kwargs if method == "dinov2" else {}))
    initial = untrained.state_dict()
    assert set(initial) == set(saved)
    if method == "capi":
        # In a one-epoch run the teacher's momentum is 1 (LightlySSL's cosine schedule
        # ends there), so the saved teacher is that initialisation exactly: the student,
        # which the 8 AdamW steps moved, would not be.
        for key, value in initial.items():
            assert torch.equal(value, saved[key]), key
    else:
        # MSN's target follows the anchor at momentum 0.996: after the anchor's 4 AdamW
        # steps at 1.5e-4 (each moves a weight by about the learning rate) it has moved by
        # 0.4 % of that, where the anchor, which would be the wrong network, moved by 1e-4
        # or more. DINOv2's teacher follows its student once, at 0.992, after the student's
        # first AdamW step at 1e-3 (its 2 steps end at momentum 1): 0.8 % of that step.
        assert any(not torch.equal(value, saved[key]) for key, value in initial.items())
        torch.testing.assert_close(saved, initial, atol=2e-5, rtol=0)


@pytest.mark.parametrize(
    ("precision", "product_dtype"), [("32-true", torch.float32), ("bf16-mixed", torch.bfloat16)]
)
def test_precision_runs_the_example_program_under_cpu_autocast(
    precision: str, product_dtype: torch.dtype, tmp_path: Path
) -> None:
    # What every example's loop runs after the shared head: its parameters stay float32,
    # its matrix products take the precision's dtype.
    probe = """
layer = nn.Linear(4, 3)
print(layer.weight.dtype, layer(torch.randn(2, 4)).dtype)
"""
    program = textwrap.dedent(bench.EXAMPLE_HEAD) + probe
    argv = [str(tmp_path), "0", "1", "0", str(tmp_path / "w.pt"), precision]
    done = subprocess.run(
        [sys.executable, "-c", program, *argv], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["torch.float32", str(product_dtype)]


def test_precision_is_passed_to_the_example_and_recorded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    commands: list[list[str]] = []

    def run(command: list[str], log: Path) -> float:
        commands.append(command)
        # The example's weights: an untrained ResNet-18 as the examples build it.
        torch.save(bench.torchvision_resnet18().state_dict(), command[-2])
        return 1.0

    monkeypatch.setattr(bench, "run", run)
    monkeypatch.setattr(bench, "knn_top1", lambda network, data: 0.7)
    out = tmp_path / "report.json"
    argv = ["bench", "--methods", "simclr", "--examples-only", "--data", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", [*argv, "--precision", "bf16-mixed", "--out", str(out)])
    bench.main()
    assert [command[-1] for command in commands] == ["bf16-mixed"]
    assert json.loads(out.read_text())["setup"]["example_precision"] == "bf16-mixed"


def test_torchvision_resnet18_is_the_examples_backbone_flattened(tmp_path: Path) -> None:
    torch.manual_seed(1)
    resnet = torchvision.models.resnet18()
    backbone = nn.Sequential(*list(resnet.children())[:-1]).eval()
    torch.save(backbone.state_dict(), tmp_path / "b.pt")
    network = bench.torchvision_resnet18(tmp_path / "b.pt").eval()
    images = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(network(images), backbone(images).flatten(1))


def test_markdown_lists_every_row() -> None:
    rows = {
        "simclr: lightly 1.6 example": {"knn_top1": 0.75, "wall_s": 230.4},
        "simclr: fastssl recipe": {"knn_top1": 0.793, "wall_s": 101.2, "speedup": "2.28x"},
        "random init (torchvision ResNet-18)": {"knn_top1": 0.7335},
    }
    rows["capi: lightly 1.6 example"] = {"knn_top1": 0.48, "linear_top1": 0.6935, "wall_s": 700}
    lines = bench.markdown(rows).splitlines()
    assert lines[0] == "| run | kNN top-1 | linear top-1 | wall s | speed-up |"
    assert lines[2] == "| simclr: lightly 1.6 example | 0.7500 |  | 230 |  |"
    assert lines[3] == "| simclr: fastssl recipe | 0.7930 |  | 101 | 2.28x |"
    assert lines[4] == "| random init (torchvision ResNet-18) | 0.7335 |  |  |  |"
    assert lines[5] == "| capi: lightly 1.6 example | 0.4800 | 0.6935 | 700 |  |"


def test_unknown_method_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["bench", "--methods", "simclr,mae"])
    with pytest.raises(SystemExit):
        bench.main()
    assert "no lightly example for ['mae']" in capsys.readouterr().err


@pytest.mark.parametrize("examples_only", [False, True])
def test_examples_only_leaves_the_recipes_out(
    examples_only: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ran: list[str] = []

    def example(method: str, *_: object) -> dict[str, float]:
        ran.append(f"example {method}")
        return {"knn_top1": 0.7, "wall_s": 200.0}

    def recipe(method: str, *_: object) -> dict[str, float]:
        ran.append(f"recipe {method}")
        return {"knn_top1": 0.8, "wall_s": 100.0}

    monkeypatch.setattr(bench, "lightly_example", example)
    monkeypatch.setattr(bench, "fastssl_recipe", recipe)
    monkeypatch.setattr(bench, "knn_top1", lambda network, data: 0.73)
    out = tmp_path / "report.json"
    argv = ["bench", "--methods", "simclr,byol", "--data", str(tmp_path), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv + (["--examples-only"] if examples_only else []))
    bench.main()
    report = json.loads(out.read_text())
    expected = ["example simclr", "example byol"]
    if not examples_only:
        expected = ["example simclr", "recipe simclr", "example byol", "recipe byol"]
    assert ran == expected
    assert report["setup"]["fastssl_recipes"] is not examples_only
    names = list(report["results"])
    assert ("simclr: fastssl recipe" in names) is not examples_only
    assert "simclr: lightly 1.6 example" in names
    assert report["results"]["random init (torchvision ResNet-18)"] == {"knn_top1": 0.73}
    if not examples_only:
        assert report["results"]["byol: fastssl recipe"]["speedup"] == "2.00x"


@pytest.mark.parametrize("method", sorted(bench.EXAMPLE_BACKBONES))
def test_example_backbone_is_the_recipes_but_for_the_examples_layerscale(method: str) -> None:
    name, options = parse_timm_name(bench.example_backbone(method).removeprefix("timm:"))
    recipe_name, recipe_options = parse_timm_name(bench.vit_backbone(method).removeprefix("timm:"))
    assert name == recipe_name
    assert options.pop("init_values") == 1e-5  # LightlySSL's DINOv2 example's LayerScale
    assert options == recipe_options
