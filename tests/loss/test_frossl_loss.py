from __future__ import annotations

import inspect

import pytest
import torch
from lightly.loss import FroSSLLoss as LightlyFroSSLLoss

from fastssl.loss import FroSSLLoss
from fastssl.loss.frossl_loss import frossl_loss


def _views(v: int, n: int, d: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g).requires_grad_() for _ in range(v)]


def _assert_value_and_grads(
    ours: torch.Tensor, theirs: torch.Tensor, leaves: list[torch.Tensor]
) -> None:
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    for a, b in zip(
        torch.autograd.grad(ours, leaves), torch.autograd.grad(theirs, leaves), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# (views, batch, dim): batch > dim uses the D x D Gram matrix, batch <= dim the N x N one.
@pytest.mark.parametrize(("v", "n", "d"), [(2, 8, 4), (2, 4, 8), (3, 5, 5), (5, 6, 3)])
@pytest.mark.parametrize("invariance_weight", [1.0, 0.0, 2.5])
def test_matches_lightly(v: int, n: int, d: int, invariance_weight: float) -> None:
    views = _views(v, n, d, seed=v + n * d)
    ours = FroSSLLoss(invariance_weight)(views)
    theirs = LightlyFroSSLLoss(invariance_weight)(views)
    _assert_value_and_grads(ours, theirs, views)


def test_matches_paper_formula() -> None:
    # Skean et al., Eq. 5-6: per view, log ||Z^T Z / tr(Z^T Z)||_F^2 with Z normalised along
    # the batch, plus V * D * MSE to the mean view; the trace taken as a constant.
    views = _views(3, 6, 4, seed=3)
    z = [torch.nn.functional.normalize(x, dim=0) for x in views]
    mean = sum(z) / 3
    expected = torch.zeros(())
    for zv in z:
        cov = zv.T @ zv
        cov = cov / torch.trace(cov).detach()
        expected = expected + torch.log((cov**2).sum())
        expected = expected + 3 * 4 * ((zv - mean) ** 2).mean()
    _assert_value_and_grads(frossl_loss(views), expected, views)


def test_regularizer_bounds() -> None:
    # The normalised Gram has unit trace: ||K||_F^2 is 1 for rank one (collapse), the
    # minimum 1 / D for orthogonal features. Identical views: no invariance term.
    collapsed = torch.ones(8, 4)
    torch.testing.assert_close(frossl_loss([collapsed, collapsed]), torch.tensor(0.0))
    orthogonal = torch.eye(4).repeat(2, 1)
    expected = 2 * torch.log(torch.tensor(1 / 4))
    torch.testing.assert_close(frossl_loss([orthogonal, orthogonal]), expected)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"at least two views but found 1"):
        FroSSLLoss()([torch.randn(4, 3)])
    with pytest.raises(
        ValueError, match=r"one shape \(batch_size, dim\), got \[\(4, 3\), \(5, 3\)\]"
    ):
        FroSSLLoss()([torch.randn(4, 3), torch.randn(5, 3)])
    with pytest.raises(ValueError, match=r"one shape"):
        FroSSLLoss()([torch.randn(4, 3, 2), torch.randn(4, 3, 2)])


def test_same_arguments_as_lightly() -> None:
    for method in ("__init__", "forward"):
        mine = inspect.signature(getattr(FroSSLLoss, method)).parameters
        peer = inspect.signature(getattr(LightlyFroSSLLoss, method)).parameters
        assert list(mine)[: len(peer)] == list(peer)
        assert [mine[name].default for name in peer] == [p.default for p in peer.values()]
