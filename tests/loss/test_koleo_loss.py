from __future__ import annotations

import inspect
import math

import pytest
import torch
from lightly.loss import KoLeoLoss as LightlyKoLeoLoss
from torch.nn import functional as F

from fastssl.loss import KoLeoLoss


def _x(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)).requires_grad_()


@pytest.mark.parametrize(("n", "d"), [(2, 3), (8, 16), (33, 4)])
@pytest.mark.parametrize(("p", "eps"), [(2, 1e-8), (1, 1e-8), (3.0, 1e-3)])
def test_matches_lightly(n: int, d: int, p: float, eps: float) -> None:
    x = _x(n, d, seed=n + d)
    ours = KoLeoLoss(p, eps)(x)
    theirs = LightlyKoLeoLoss(p, eps)(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        torch.autograd.grad(ours, x)[0], torch.autograd.grad(theirs, x)[0], rtol=1e-4, atol=1e-6
    )


def test_matches_naive_nearest_neighbour_loop() -> None:
    x = _x(6, 3, seed=4)
    z = F.normalize(x, dim=1)
    terms = []
    for i in range(6):
        distances = [torch.linalg.vector_norm(z[i] - z[j]) for j in range(6) if j != i]
        terms.append(-torch.log(torch.stack(distances).min()))
    expected = torch.stack(terms).mean()
    loss = KoLeoLoss(eps=1e-12)(x)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        torch.autograd.grad(loss, x)[0], torch.autograd.grad(expected, x)[0], rtol=1e-4, atol=1e-6
    )


def test_square_vertices() -> None:
    # Four unit vectors at 90 degrees: every nearest neighbour is at distance sqrt(2).
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    assert KoLeoLoss()(x).item() == pytest.approx(-math.log(math.sqrt(2)), abs=1e-6)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"p must be > 0, got p=0"):
        KoLeoLoss(p=0)
    with pytest.raises(ValueError, match=r"eps must be >= 0, got eps=-1"):
        KoLeoLoss(eps=-1)
    with pytest.raises(ValueError, match=r"batch_size >= 2 .*got \(1, 4\)"):
        KoLeoLoss()(torch.randn(1, 4))
    with pytest.raises(ValueError, match=r"got \(2, 3, 4\)"):
        KoLeoLoss()(torch.randn(2, 3, 4))


def test_same_arguments_as_lightly() -> None:
    for method in ("__init__", "forward"):
        mine = inspect.signature(getattr(KoLeoLoss, method)).parameters
        peer = inspect.signature(getattr(LightlyKoLeoLoss, method)).parameters
        assert list(mine)[: len(peer)] == list(peer)
        assert [mine[name].default for name in peer] == [p.default for p in peer.values()]
