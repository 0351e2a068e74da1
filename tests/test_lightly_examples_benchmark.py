"""benchmarks/lightly_examples_fashion_mnist.py: LightlySSL 1.6's example loops run as the
benchmark runs them (one short epoch on a small folder), their backbones load into the
network the shared kNN scores, and the table and arguments behave."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

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


@pytest.mark.parametrize("method", sorted(bench.EXAMPLES))
def test_example_trains_and_saves_a_backbone_the_scored_network_loads(
    method: str, folder: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "backbone.pt"
    program = textwrap.dedent(bench.EXAMPLE_HEAD) + textwrap.dedent(bench.EXAMPLES[method])
    done = subprocess.run(
        [sys.executable, "-c", program, str(folder), "0", "1", "0", str(weights)],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "epoch 0 loss" in done.stdout
    saved = torch.load(weights, weights_only=True)
    network = bench.torchvision_resnet18(weights)
    assert set(network.state_dict()) == set(saved)  # strict load: every key used
    # The example seeds its backbone as torchvision_resnet18(seed=0) does; its training
    # moved the weights away from that initialisation.
    untrained = bench.torchvision_resnet18(seed=0)
    assert not torch.equal(network[0].weight, untrained[0].weight)
    assert network(torch.randn(2, 3, 32, 32)).shape == (2, 512)


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
    lines = bench.markdown(rows).splitlines()
    assert lines[0] == "| run | kNN top-1 | wall s | speed-up |"
    assert lines[2] == "| simclr: lightly 1.6 example | 0.7500 | 230 |  |"
    assert lines[3] == "| simclr: fastssl recipe | 0.7930 | 101 | 2.28x |"
    assert lines[4] == "| random init (torchvision ResNet-18) | 0.7335 |  |  |"


def test_unknown_method_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["bench", "--methods", "simclr,smog"])
    with pytest.raises(SystemExit):
        bench.main()
    assert "no lightly example for ['smog']" in capsys.readouterr().err
