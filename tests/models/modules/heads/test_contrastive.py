from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.models.modules import heads as lightly_heads
from torch import nn

from fastssl.models.modules.heads import contrastive
from tests.models.modules.heads._oracle import (
    assert_default_structure,
    assert_matches_lightly,
    build_same_seed,
)

SMALL = {"input_dim": 6, "hidden_dim": 8, "output_dim": 5}

# (head, constructor kwargs, input shape)
CASES: list[tuple[str, dict[str, Any], tuple[int, ...]]] = [
    ("SimCLRProjectionHead", SMALL, (4, 6)),
    ("SimCLRProjectionHead", SMALL | {"num_layers": 3, "batch_norm": False}, (4, 6)),
    ("SimCLRProjectionHead", SMALL | {"num_layers": 4, "batch_norm": True}, (4, 6)),
    ("MoCoProjectionHead", SMALL, (4, 6)),
    ("MoCoProjectionHead", SMALL | {"num_layers": 3, "batch_norm": True}, (4, 6)),
    ("DenseCLProjectionHead", SMALL, (4, 6)),
    ("DenseCLProjectionHead", {"input_dim": 3, "hidden_dim": 7, "output_dim": 2}, (2, 9, 3)),
]
NAMES = sorted({name for name, _, _ in CASES})


@pytest.mark.parametrize("name", NAMES)
def test_default_architecture_matches_lightly(name: str) -> None:
    assert_default_structure(getattr(contrastive, name), getattr(lightly_heads, name))


@pytest.mark.parametrize(("name", "kwargs", "shape"), CASES)
def test_matches_lightly(name: str, kwargs: dict[str, Any], shape: tuple[int, ...]) -> None:
    ours, theirs = build_same_seed(getattr(contrastive, name), getattr(lightly_heads, name), kwargs)
    assert_matches_lightly(ours, theirs, shape)


@pytest.mark.parametrize("name", ["SimCLRProjectionHead", "MoCoProjectionHead"])
@pytest.mark.parametrize(("num_layers", "batch_norm"), [(2, True), (3, False), (5, True)])
def test_depth_and_batch_norm(name: str, num_layers: int, batch_norm: bool) -> None:
    head = getattr(contrastive, name)(6, 8, 5, num_layers=num_layers, batch_norm=batch_norm)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    norms = [m for m in head.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(linears) == num_layers
    assert len(norms) == (num_layers if batch_norm else 0)
    assert all((lin.bias is None) == batch_norm for lin in linears)
    assert sum(isinstance(m, nn.ReLU) for m in head.modules()) == num_layers - 1
    assert head(torch.randn(3, 6)).shape == (3, 5)


@pytest.mark.parametrize("name", ["SimCLRProjectionHead", "MoCoProjectionHead"])
def test_rejects_too_few_layers(name: str) -> None:
    # lightly silently builds 2 layers for num_layers=1; we refuse instead.
    with pytest.raises(ValueError, match=r"num_layers must be an integer >= 2, got 1"):
        getattr(contrastive, name)(num_layers=1)


def test_simclr_v1_formula() -> None:
    torch.manual_seed(0)
    head = contrastive.SimCLRProjectionHead(6, 8, 5, batch_norm=False).eval()
    w1, b1, w2, b2 = (
        head.layers[0].weight,
        head.layers[0].bias,
        head.layers[2].weight,
        head.layers[2].bias,
    )
    x = torch.randn(4, 6)
    # z = W2 relu(W1 h + b1) + b2 (SimCLR eq. 2 with biases).
    torch.testing.assert_close(head(x), torch.relu(x @ w1.t() + b1) @ w2.t() + b2)
