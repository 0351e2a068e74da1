from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from fastssl import cli
from fastssl.eval.export_cli import backbone_state_dict
from fastssl.models.backbones import _ViTFeatures, build_backbone
from tests.eval.conftest import save_checkpoint, save_method_checkpoint


def test_torch_format_round_trip(
    tmp_path: Path, tiny_registered: None, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, model = save_checkpoint(tmp_path / "a.ckpt", backbone="tiny", input_size=12)
    out = tmp_path / "exported" / "tiny.pt"
    assert cli.main(["export", str(ckpt), "--out", str(out)]) == 0
    assert "to " + str(out) in capsys.readouterr().out
    state = torch.load(out, weights_only=True)  # plain tensors: loadable without pickle
    fresh = type(model)(backbone="tiny", input_size=12).backbone
    fresh.load_state_dict(state, strict=True)
    images = torch.randn(4, 3, 12, 12)
    assert torch.equal(fresh.eval()(images), model.backbone.eval()(images))
    assert not any(k.startswith("projection") for k in state)  # the head is not exported
    sidecar = json.loads(Path(str(out) + ".json").read_text())
    fields = ("method", "backbone", "feature_dim", "input_size", "format")
    assert {k: sidecar[k] for k in fields} == {
        "method": "tiny", "backbone": "tiny", "feature_dim": 8, "input_size": 12, "format": "torch",
    }  # fmt: skip


@pytest.mark.parametrize("fmt", ["torch", "torchvision"])
def test_resnet18_loads_into_a_plain_backbone(
    fmt: str, tmp_path: Path, tiny_registered: None, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, model = save_checkpoint(tmp_path / "r.ckpt", backbone="resnet18", input_size=32)
    out = tmp_path / "r18.pt"
    assert cli.main(["export", str(ckpt), "--out", str(out), "--format", fmt]) == 0
    state = torch.load(out, weights_only=True)
    if fmt == "torch":
        fresh = build_backbone("resnet18", 32)[0]
    else:  # the plain torchvision model with the CIFAR stem the sidecar asks for
        fresh = torchvision.models.resnet18()
        fresh.fc = nn.Identity()
        fresh.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        fresh.maxpool = nn.Identity()
    fresh.load_state_dict(state, strict=True)
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fresh.eval()(images), model.backbone.eval()(images), rtol=0, atol=0)
    sidecar = json.loads(Path(str(out) + ".json").read_text())
    assert sidecar["cifar_stem"] is True and sidecar["feature_dim"] == 512
    assert sidecar["format"] == fmt and sidecar["backbone"] == "resnet18"


def test_torchvision_format_strips_the_vit_wrapper() -> None:
    def small_vit() -> torchvision.models.VisionTransformer:
        return torchvision.models.VisionTransformer(
            image_size=16, patch_size=8, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16
        )

    torch.manual_seed(0)
    wrapped = _ViTFeatures(small_vit())
    state = backbone_state_dict(wrapped, "vit_b_16", "torchvision")
    plain = small_vit()
    plain.heads = nn.Identity()
    plain.load_state_dict(state, strict=True)
    images = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(plain.eval()(images), wrapped.eval()(images), rtol=0, atol=0)


def test_bad_exports(
    tmp_path: Path, tiny_registered: None, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, _ = save_checkpoint(tmp_path / "a.ckpt", backbone="tiny")
    out = str(tmp_path / "x.pt")
    assert cli.main(["export", str(ckpt), "--out", out, "--format", "torchvision"]) == 2
    err = capsys.readouterr().err
    assert "needs a torchvision backbone" in err and "'tiny'" in err and "--format torch" in err
    assert cli.main(["export", str(tmp_path / "none.ckpt"), "--out", out]) == 2
    assert "none.ckpt' does not exist" in capsys.readouterr().err
    assert not Path(out).exists()
    with pytest.raises(ValueError, match="format='onnx' is unknown"):
        backbone_state_dict(nn.Linear(1, 1), "tiny", "onnx")


@pytest.mark.parametrize(
    ("name", "flag", "network"),
    [("dino", None, "ema"), ("dino", "online", "online"), ("byol", None, "online"),
     ("byol", "ema", "ema")],
)  # fmt: skip
def test_export_writes_the_network_the_paper_evaluates(
    name: str, flag: str | None, network: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    ckpt, model = save_method_checkpoint(tmp_path / f"{name}.ckpt", name)
    out = tmp_path / "b.pt"
    argv = ["export", str(ckpt), "--out", str(out)] + (["--network", flag] if flag else [])
    assert cli.main(argv) == 0
    assert f"{name} {network} network" in capsys.readouterr().out
    expected = model.ema_backbone() if network == "ema" else model.backbone
    assert expected is not None
    state = torch.load(out, weights_only=True)
    assert state.keys() == expected.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in expected.state_dict().items())
    assert json.loads(Path(str(out) + ".json").read_text())["network"] == network
