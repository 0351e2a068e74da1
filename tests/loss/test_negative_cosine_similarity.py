from __future__ import annotations

import pytest
import torch
from lightly.loss import NegativeCosineSimilarity as LightlyNegativeCosineSimilarity

from fastssl.loss.negative_cosine_similarity import (
    NegativeCosineSimilarity,
    negative_cosine_similarity,
)


@pytest.mark.parametrize("shape", [(1, 8), (4, 8), (3, 5, 7)])
@pytest.mark.parametrize("dim", [1, -1])
@pytest.mark.parametrize("eps", [1e-8, 1e-2])
def test_matches_lightly(shape: tuple[int, ...], dim: int, eps: float) -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(shape, generator=g, requires_grad=True)
    x1 = torch.randn(shape, generator=g, requires_grad=True)
    ours = NegativeCosineSimilarity(dim, eps)(x0, x1)
    theirs = LightlyNegativeCosineSimilarity(dim, eps)(x0, x1)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-7)
    for a, b in zip(
        torch.autograd.grad(ours, (x0, x1)), torch.autograd.grad(theirs, (x0, x1)), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_matches_formula() -> None:
    # SimSiam's D(p, z) = -p / ||p|| . z / ||z||, averaged over the batch.
    x0, x1 = torch.randn(5, 6), torch.randn(5, 6)
    expected = -torch.stack(
        [torch.dot(a, b) / (a.norm() * b.norm()) for a, b in zip(x0, x1, strict=True)]
    ).mean()
    torch.testing.assert_close(NegativeCosineSimilarity()(x0, x1), expected)
    torch.testing.assert_close(negative_cosine_similarity(x0, x1), expected)


def test_bounds() -> None:
    x = torch.randn(4, 8)
    assert NegativeCosineSimilarity()(x, 3 * x).item() == pytest.approx(-1.0)
    assert NegativeCosineSimilarity()(x, -x).item() == pytest.approx(1.0)


def test_zero_vector_is_finite() -> None:
    loss = NegativeCosineSimilarity()(torch.zeros(2, 3), torch.randn(2, 3))
    assert loss.item() == 0.0


@pytest.mark.compile
def test_compile_fullgraph() -> None:
    torch._dynamo.reset()
    loss_fn = NegativeCosineSimilarity()
    x0, x1 = torch.randn(4, 8), torch.randn(4, 8)
    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x0, x1), loss_fn(x0, x1))


def test_rejects_negative_eps() -> None:
    with pytest.raises(ValueError, match=r"eps must be >= 0, got eps=-1.0"):
        NegativeCosineSimilarity(eps=-1.0)
