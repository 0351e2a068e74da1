from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from fastssl.models.backbones import build_backbone, parse_timm_name
from fastssl.models.utils import deactivate_drop_path

timm = pytest.importorskip("timm")


@pytest.mark.parametrize(
    ("name", "model", "options"),
    [
        ("resnet18", "resnet18", {}),
        ("vit_s(drop_path_rate=0.1)", "vit_s", {"drop_path_rate": 0.1}),
        (
            "vit_t( drop_path_rate = 0.2 , qkv_bias=false )",
            "vit_t",
            {"drop_path_rate": 0.2, "qkv_bias": False},
        ),
        ("resnet50()", "resnet50", {}),
    ],
)
def test_parse_timm_name(name: str, model: str, options: dict[str, Any]) -> None:
    assert parse_timm_name(name) == (model, options)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("vit_small_patch16_224(drop_path_rate=0.1", r"options end with '\)'"),
        ("vit_small_patch16_224(0.1)", r"option '0.1' is not key=value"),
        ("vit_small_patch16_224(drop path=0.1)", r"option 'drop path=0.1' is not key=value"),
    ],
)
def test_parse_timm_name_errors_name_the_backbone(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=rf"backbone 'timm:{name[:10]}.*{message}"):
        parse_timm_name(name)


def _drop_probs(module: nn.Module) -> list[float]:
    return [m.drop_prob for m in module.modules() if isinstance(m, timm.layers.DropPath)]


@pytest.mark.parametrize("name", ["timm:vit_tiny_patch16_224", "timm:resnet18"])
def test_timm_options_reach_the_model(name: str) -> None:
    plain, _ = build_backbone(name, input_size=32)
    dropping, _ = build_backbone(f"{name}(drop_path_rate=0.2)", input_size=32)
    assert _drop_probs(plain) == []
    probs = _drop_probs(dropping)
    assert probs and max(probs) == pytest.approx(0.2)  # timm ramps it up over the depth


def _train_mode_outputs_differ(module: nn.Module) -> bool:
    module.train()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        return not torch.equal(module(x), module(x))


def test_deactivate_drop_path_makes_train_mode_deterministic() -> None:
    torch.manual_seed(0)
    vit, _ = build_backbone("timm:vit_tiny_patch16_224(drop_path_rate=0.5)", input_size=32)
    assert _train_mode_outputs_differ(vit)
    assert deactivate_drop_path(vit) is vit
    assert set(_drop_probs(vit)) == {0.0}
    assert not _train_mode_outputs_differ(vit)


def test_deactivate_drop_path_covers_torchvision_stochastic_depth() -> None:
    from torchvision.ops import StochasticDepth

    block = nn.Sequential(nn.Linear(4, 4), StochasticDepth(0.5, "row"))
    assert deactivate_drop_path(block)[1].p == 0.0
