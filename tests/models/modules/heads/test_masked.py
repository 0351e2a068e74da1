from __future__ import annotations

import sys
from typing import Any

import pytest
import torch
from torch import nn

from fastssl.models.modules.heads import masked
from tests.models.modules.heads._oracle import (
    assert_default_structure,
    assert_matches_lightly,
    build_same_seed,
)

heads_timm = pytest.importorskip("lightly.models.modules.heads_timm")

SMALL = {"input_dim": 6, "output_dim": 5, "hidden_dim": 8, "num_blocks": 2}


@pytest.mark.parametrize(
    "kwargs",
    [
        SMALL,
        SMALL | {"num_blocks": 0},
        SMALL
        | {"num_blocks": 3, "mlp_ratio": 1.5, "act_layer": nn.ReLU, "norm_layer": nn.Identity},
    ],
)
def test_aim_head_matches_lightly(kwargs: dict[str, Any]) -> None:
    ours, theirs = build_same_seed(masked.AIMPredictionHead, heads_timm.AIMPredictionHead, kwargs)
    assert_matches_lightly(ours, theirs, (2, 3, 6))


def test_aim_head_default_architecture_matches_lightly() -> None:
    assert_default_structure(
        masked.AIMPredictionHead, heads_timm.AIMPredictionHead, input_dim=768, output_dim=768
    )


def test_aim_block_is_residual() -> None:
    torch.manual_seed(0)
    block = masked.AIMPredictionHeadBlock(6, 6, mlp_ratio=2.0)
    x = torch.randn(2, 3, 6)
    mlp = block.mlp
    hidden = nn.functional.gelu(
        nn.functional.layer_norm(x, (6,), block.norm.weight, block.norm.bias) @ mlp.fc1.weight.t()
    )
    torch.testing.assert_close(block(x), x + hidden @ mlp.fc2.weight.t())
    assert mlp.fc1.weight.shape == (12, 6)
    with pytest.raises(
        ValueError, match=r"output_dim must equal input_dim, got input_dim=6 and output_dim=4"
    ):
        masked.AIMPredictionHeadBlock(6, 4)


def test_aim_head_without_timm_asks_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    monkeypatch.setitem(sys.modules, "timm.layers", None)
    with pytest.raises(ImportError, match=r"pip install timm"):
        masked.AIMPredictionHead(6, 5, hidden_dim=8, num_blocks=1)


class _PlainMlp(nn.Module):
    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int,
        act_layer: type[nn.Module],
        drop: float,
        bias: bool,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def test_aim_head_with_own_mlp_needs_no_timm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    monkeypatch.setitem(sys.modules, "timm.layers", None)
    head = masked.AIMPredictionHead(6, 5, hidden_dim=8, num_blocks=2, mlp_layer=_PlainMlp)
    assert head(torch.randn(2, 3, 6)).shape == (2, 3, 5)
    assert isinstance(head.blocks[1].mlp, _PlainMlp)


def test_aim_head_rejects_negative_blocks() -> None:
    with pytest.raises(ValueError, match=r"num_blocks must be an integer >= 0, got -1"):
        masked.AIMPredictionHead(6, 5, num_blocks=-1)
