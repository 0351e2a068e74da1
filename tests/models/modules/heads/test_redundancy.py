from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.models.modules import heads as lightly_heads
from torch import nn

from fastssl.models.modules.heads import redundancy
from tests.models.modules.heads._oracle import (
    assert_default_structure,
    assert_matches_lightly,
    build_same_seed,
)

SMALL = {"input_dim": 6, "hidden_dim": 8, "output_dim": 5}

CASES: list[tuple[str, dict[str, Any], tuple[int, ...]]] = [
    ("BarlowTwinsProjectionHead", SMALL, (4, 6)),
    ("VICRegProjectionHead", SMALL, (4, 6)),
    ("VICRegProjectionHead", SMALL | {"num_layers": 2}, (4, 6)),
    ("VICRegProjectionHead", SMALL | {"num_layers": 4}, (4, 6)),
    ("VicRegLLocalProjectionHead", SMALL, (4, 6)),
    ("VicRegLLocalProjectionHead", SMALL, (2, 9, 6)),
    ("MMCRProjectionHead", SMALL, (4, 6)),
    (
        "MMCRProjectionHead",
        SMALL | {"num_layers": 1, "batch_norm": False, "use_bias": True},
        (4, 6),
    ),
    ("MMCRProjectionHead", SMALL | {"num_layers": 3, "use_bias": True}, (4, 6)),
    ("LeJEPAProjectionHead", SMALL, (4, 6)),
    ("LeJEPAProjectionHead", SMALL | {"num_layers": 2}, (4, 6)),
    ("LeWMProjectionHead", SMALL, (4, 6)),
    ("LeWMProjectionHead", SMALL | {"batch_norm": False}, (4, 6)),
]
NAMES = sorted({name for name, _, _ in CASES})
REQUIRED_INPUT = {"LeJEPAProjectionHead", "LeWMProjectionHead"}


@pytest.mark.parametrize("name", NAMES)
def test_default_architecture_matches_lightly(name: str) -> None:
    kwargs = {"input_dim": 384} if name in REQUIRED_INPUT else {}
    assert_default_structure(getattr(redundancy, name), getattr(lightly_heads, name), **kwargs)


@pytest.mark.parametrize(("name", "kwargs", "shape"), CASES)
def test_matches_lightly(name: str, kwargs: dict[str, Any], shape: tuple[int, ...]) -> None:
    ours, theirs = build_same_seed(getattr(redundancy, name), getattr(lightly_heads, name), kwargs)
    assert_matches_lightly(ours, theirs, shape)


@pytest.mark.parametrize("num_layers", [1, 2, 4])
def test_mmcr_counts_hidden_layers(num_layers: int) -> None:
    head = redundancy.MMCRProjectionHead(6, 8, 5, num_layers=num_layers, use_bias=True)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == num_layers + 1
    assert all(lin.bias is not None for lin in linears)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("VICRegProjectionHead", {"num_layers": 1}, r"num_layers must be an integer >= 2, got 1"),
        ("LeJEPAProjectionHead", {"input_dim": 4, "num_layers": 1}, r"num_layers .* >= 2, got 1"),
        ("MMCRProjectionHead", {"num_layers": 0}, r"num_layers must be an integer >= 1, got 0"),
        ("BarlowTwinsProjectionHead", {"hidden_dim": -1}, r"hidden_dim .* got -1"),
    ],
)
def test_rejects_bad_arguments(name: str, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        getattr(redundancy, name)(**kwargs)


def test_vicregl_local_head_normalises_each_location() -> None:
    torch.manual_seed(0)
    head = redundancy.VicRegLLocalProjectionHead(6, 8, 5)
    x = torch.randn(2, 9, 6)
    # Layer norm: each location is processed independently of the others.
    torch.testing.assert_close(head(x)[0, 3], head(x[0, 3:4])[0])
