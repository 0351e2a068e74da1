from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.models.modules import heads as lightly_heads
from torch import nn

from fastssl.models.modules.heads import siamese
from tests.models.modules.heads._oracle import (
    assert_default_structure,
    assert_matches_lightly,
    build_same_seed,
)

SMALL = {"input_dim": 6, "hidden_dim": 8, "output_dim": 5}
OTHER = {"input_dim": 3, "hidden_dim": 11, "output_dim": 7}
NAMES = [
    "BYOLProjectionHead",
    "BYOLPredictionHead",
    "SimSiamProjectionHead",
    "SimSiamPredictionHead",
    "NNCLRProjectionHead",
    "NNCLRPredictionHead",
    "TiCoProjectionHead",
]


@pytest.mark.parametrize("name", NAMES)
def test_default_architecture_matches_lightly(name: str) -> None:
    assert_default_structure(getattr(siamese, name), getattr(lightly_heads, name))


@pytest.mark.parametrize("kwargs", [SMALL, OTHER])
@pytest.mark.parametrize("name", NAMES)
def test_matches_lightly(name: str, kwargs: dict[str, Any]) -> None:
    ours, theirs = build_same_seed(getattr(siamese, name), getattr(lightly_heads, name), kwargs)
    assert_matches_lightly(ours, theirs, (5, kwargs["input_dim"]))


@pytest.mark.parametrize(
    ("name", "n_linear", "output_norm"),
    [
        ("BYOLProjectionHead", 2, None),
        ("SimSiamProjectionHead", 3, False),  # output batch norm without affine parameters
        ("SimSiamPredictionHead", 2, None),
        ("NNCLRProjectionHead", 3, True),
    ],
)
def test_layout(name: str, n_linear: int, output_norm: bool | None) -> None:
    head = getattr(siamese, name)(**SMALL)
    layers = list(head.layers)
    assert sum(isinstance(m, nn.Linear) for m in layers) == n_linear
    last = layers[-1]
    if output_norm is None:
        assert isinstance(last, nn.Linear)
        assert last.bias is not None
    else:
        assert isinstance(last, nn.BatchNorm1d)
        assert last.affine is output_norm


def test_simsiam_projection_output_is_standardised() -> None:
    # The affine-free output batch norm makes every feature zero-mean, unit-variance.
    torch.manual_seed(0)
    out = siamese.SimSiamProjectionHead(**SMALL)(torch.randn(64, 6))
    torch.testing.assert_close(out.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(5), atol=1e-3, rtol=0)


def test_rejects_bad_dims() -> None:
    with pytest.raises(ValueError, match=r"output_dim must be a positive integer, got 0"):
        siamese.BYOLPredictionHead(output_dim=0)
