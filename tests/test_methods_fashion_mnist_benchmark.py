"""benchmarks/methods_fashion_mnist.py: its baselines, its judgement and its table (the
benchmark itself trains for hours; these check the pieces it is made of)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fastssl.eval.checkpoint import select_backbone
from fastssl.eval.features import pooled_features
from fastssl.models.backbones import build_backbone
from fastssl.train.checkpoint import load_method
from tests._benchmarks import load_benchmark

bench = load_benchmark("methods_fashion_mnist")


def _last_bn_weights(resnet: Any) -> list[torch.Tensor]:
    return [
        block.bn2.weight.detach() for layer in (resnet.layer1, resnet.layer4) for block in layer
    ]


def test_timm_zeroes_the_last_batchnorm_and_torchvision_init_does_not() -> None:
    torch.manual_seed(0)
    resnet: Any = build_backbone("timm:resnet18", 32)[0]
    assert all(torch.all(w == 0) for w in _last_bn_weights(resnet))  # timm's zero init
    bench.torchvision_init_(resnet)
    assert all(torch.all(w == 1) for w in _last_bn_weights(resnet))
    conv = resnet.layer2[0].conv1
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)


def test_recipes_can_drop_timms_zeroed_residual_branches() -> None:
    # pipelines/fashion_mnist/{simsiam,moco}.yaml: the backbone starts with every residual
    # branch live (BatchNorm weight 1), as torchvision's ResNets do.
    torch.manual_seed(0)
    resnet: Any = build_backbone("timm:resnet18(zero_init_last=False)", 32)[0]
    assert all(torch.all(w == 1) for w in _last_bn_weights(resnet))


@pytest.mark.parametrize(
    ("selected", "expected"), [("simclr,byol", ["simclr", "byol"]), (" mae ", ["mae"])]
)
def test_recipe_methods_selects_by_name(selected: str, expected: list[str]) -> None:
    assert bench.recipe_methods(selected) == expected


def test_recipe_methods_all_and_unknown() -> None:
    assert "simclr" in bench.recipe_methods("all") and len(bench.recipe_methods("all")) >= 30
    with pytest.raises(ValueError, match=r"no recipe .* for nosuch"):
        bench.recipe_methods("simclr,nosuch")


VIT = "timm:vit_tiny_patch16_224(patch_size=4, depth=6)"


@pytest.mark.parametrize(
    ("method", "backbone", "wrapper"),
    [
        ("simclr", "timm:resnet18", "simclr"),
        ("densecl", "resnet18", "simclr"),  # the dense trunk pools the same features
        ("mae", VIT, "mae"),
        ("simmim", VIT, "mae"),
        ("aim", VIT, "aim"),  # a prefix-causal ViT: a network of its own
        ("ijepa", VIT, "ijepa"),  # patch average, its own init and positions
    ],
)
def test_baseline_wrapper(method: str, backbone: str, wrapper: str) -> None:
    assert bench.baseline_wrapper(method, backbone) == wrapper
    name = bench.baseline_name("random", backbone, wrapper)
    own = wrapper in ("aim", "ijepa")
    assert name.startswith(f"random ({backbone}") and (f"{wrapper}'s network" in name) is own


def test_ijepa_baseline_is_ijepas_network_at_initialisation(tmp_path: Path) -> None:
    # The class-token ViT's features are not I-JEPA's patch average: a baseline of its own.
    path = bench.random_init_checkpoint("ijepa", VIT, 0, tmp_path / "random.ckpt")
    model = load_method(path)
    network = select_backbone(model)[0].eval()
    plain = select_backbone(bench.build_wrapper("mae", VIT, 0))[0].eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = pooled_features(network(images))
        torch.testing.assert_close(features, model.target_backbone(images))
        assert not torch.allclose(features, pooled_features(plain(images)), atol=1e-3)


@pytest.mark.parametrize("backbone", ["timm:resnet18", "resnet18"])
def test_random_init_checkpoint_is_read_by_fastssl_eval(backbone: str, tmp_path: Path) -> None:
    path = bench.random_init_checkpoint("simclr", backbone, 0, tmp_path / "random.ckpt")
    model = load_method(path)
    assert model.name == "simclr" and model.input_size == 32
    network = select_backbone(model)[0]
    norms = [layer for layer in network.modules() if isinstance(layer, nn.BatchNorm2d)]
    assert len(norms) == 20  # ResNet-18: no BatchNorm zeroed, fresh running statistics
    for layer in norms:
        stats: list[Any] = [layer.running_mean, layer.running_var]
        assert torch.all(layer.weight == 1) and torch.all(layer.bias == 0)
        assert torch.all(stats[0] == 0) and torch.all(stats[1] == 1)
    again = load_method(bench.random_init_checkpoint("simclr", backbone, 0, tmp_path / "b.ckpt"))
    for key, value in model.state_dict().items():  # seeded
        assert torch.equal(value, again.state_dict()[key]), key


@pytest.mark.parametrize("wrapper", ["mae", "aim", "ijepa"])
def test_vit_random_init_is_the_wrappers_own_seeded_one(wrapper: str, tmp_path: Path) -> None:
    path = bench.random_init_checkpoint(wrapper, VIT, 0, tmp_path / "random.ckpt")
    model = load_method(path)
    assert model.name == wrapper
    again = bench.build_wrapper(wrapper, VIT, 0)
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


@pytest.mark.parametrize("backbone", ["timm:resnet18", VIT])
def test_backbone_checkpoint_gives_the_trained_backbones_features(
    backbone: str, tmp_path: Path
) -> None:
    torch.manual_seed(1)
    trained, _ = build_backbone(backbone, 32)
    torch.save(trained.state_dict(), tmp_path / "backbone.pt")
    path = bench.backbone_checkpoint(backbone, tmp_path / "backbone.pt", 0, tmp_path / "s.ckpt")
    network = select_backbone(load_method(path))[0].eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = pooled_features(trained.eval()(images))
        torch.testing.assert_close(pooled_features(network(images)), expected)


def _row(name: str, kind: str, knn: float, linear: float, backbone: str = "b") -> dict[str, Any]:
    row = {"name": name, "kind": kind, "backbone": backbone, "knn_top1": knn, "linear_top1": linear}
    if kind == "method":
        judged_by = "linear_top1" if name in bench.MASKED else "knn_top1"
        row.update(method=name, judged_by=judged_by, random_baseline=f"random ({backbone})")
    return row


@pytest.mark.parametrize(
    ("name", "knn", "linear", "goal"),
    [
        ("simclr", 0.80, 0.0, "met"),  # +6 over init, +2 over pixels
        ("simclr", 0.75, 0.0, "missed"),  # +1 over init, below pixels
        ("byol", 0.77, 0.0, "missed"),  # +3 over init, below pixels
        ("mae", 0.10, 0.80, "met"),  # judged by linear, not compared with pixels
        ("mae", 0.90, 0.75, "missed"),  # linear +1 over init: kNN does not count
    ],
)
def test_judge(name: str, knn: float, linear: float, goal: str) -> None:
    rows = [
        _row("random (b)", "random", 0.74, 0.74),
        _row("raw pixels", "pixels", 0.78, 0.82, "pixels"),
        _row(name, "method", knn, linear),
    ]
    bench.judge(rows)
    assert rows[-1]["goal"].split(":")[0] == goal
    metric = "linear_top1" if name in bench.MASKED else "knn_top1"
    assert rows[-1]["vs_random_init_points"] == pytest.approx(100 * (rows[-1][metric] - 0.74))
    assert ("vs_pixels_points" in rows[-1]) is (name not in bench.MASKED)


def test_markdown_table_lists_methods_first_and_failures() -> None:
    rows = [
        _row("random (b)", "random", 0.74, 0.7),
        _row("simclr", "method", 0.8, 0.85),
        {"name": "byol", "error": "RuntimeError: exited 1\ntraceback"},
    ]
    bench.judge(rows)
    lines = bench.markdown_table(rows).splitlines()
    assert lines[0].startswith("| run | backbone | epochs |") and len(lines) == 5
    assert lines[2].startswith("| simclr |") and "**0.8000**" in lines[2]
    assert "failed: RuntimeError: exited 1 |" in lines[3] and "traceback" not in lines[3]
    assert lines[4].startswith("| random (b) |") and "**" not in lines[4]


def test_arguments() -> None:
    args = bench.parse_args(["--methods", "simclr,byol", "--baselines", "pixels,random"])
    assert args.methods == ["simclr", "byol"] and args.baselines == ["random", "pixels"]
    assert bench.parse_args(["--baselines", "none"]).baselines == []
    with pytest.raises(SystemExit):
        bench.parse_args(["--baselines", "pixel"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--methods", "nosuch"])


def test_random_and_pixel_baselines_are_scored_by_fastssl_eval(tmp_path: Path) -> None:
    """The baseline rows end to end on a tiny folder: checkpoint, ``fastssl eval`` in a
    subprocess, collapse statistics of the test images."""
    from tests.test_fashion_mnist_recipes import make_grayscale_folder

    data = tmp_path / "data"
    make_grayscale_folder(data / "train", n=24, seed=0)
    make_grayscale_folder(data / "test", n=8, seed=1)
    args = bench.parse_args(["--methods", "simclr", "--workers", "0"])
    jobs = bench.baseline_rows("random", [("timm:resnet18", "simclr")], data, tmp_path, args)
    jobs += bench.baseline_rows("pixels", [], data, tmp_path, args)
    assert [name for name, _ in jobs] == ["random (timm:resnet18)", "raw pixels"]
    for _, job in jobs:
        row = job()
        assert 0.0 <= row["knn_top1"] <= 1.0 and 0.0 <= row["linear_top1"] <= 1.0
        assert row["collapse_std"] > 0.0 and 1.0 <= row["effective_rank"] <= 8.0
    # Two separable classes (small and large blobs): the pixels tell them apart.
    assert row["knn_top1"] >= 0.75


@pytest.mark.parametrize(("method", "batch"), [("simclr", 256), ("dinov2", 64), ("capi", 32)])
def test_method_row_records_the_recipes_batch_and_the_runs_summary(
    method: str, batch: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``pretrain_method`` runs the recipe's ``fastssl pretrain`` and records its batch (the
    recipe's, which some recipes lower from 256) and the run's summary in the row."""
    commands: list[list[str]] = []

    def fake_run(command: list[str], log: Path) -> float:
        commands.append(command)
        summary: dict[str, Any] = {"images_per_s": 100.0, "train_s": 5.0, "steps": 7}
        summary.update(final_loss=1.5, precision="32-true")
        (tmp_path / "summary.json").write_text(json.dumps(summary))
        return 12.0

    monkeypatch.setattr(bench, "run", fake_run)
    monkeypatch.setattr(bench, "score_checkpoint", lambda row, *_: row)
    args = bench.parse_args(["--methods", method])
    row = bench.pretrain_method(method, tmp_path / "data", tmp_path, args)
    assert row["batch_size"] == batch == bench.load_recipe(method)["data"]["batch_size"]
    assert (row["wall_s"], row["steps"], row["images_per_s"]) == (12.0, 7, 100.0)
    assert commands[0][3:5] == ["pretrain", str(bench.RECIPES / f"{method}.yaml")]
