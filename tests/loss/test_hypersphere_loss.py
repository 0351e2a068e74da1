from __future__ import annotations

import inspect
import math

import pytest
import torch
from lightly.loss.hypersphere_loss import HypersphereLoss as LightlyHypersphereLoss
from torch.nn import functional as F

from fastssl.loss.hypersphere_loss import HypersphereLoss, alignment_loss, uniformity_loss


def _pair(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, d, generator=g).requires_grad_(),
        torch.randn(n, d, generator=g).requires_grad_(),
    )


def _assert_value_and_grads(ours: torch.Tensor, theirs: torch.Tensor, leaves: tuple) -> None:
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    for a, b in zip(
        torch.autograd.grad(ours, leaves), torch.autograd.grad(theirs, leaves), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("n", "d"), [(2, 3), (8, 16), (20, 4)])
@pytest.mark.parametrize(("t", "lam", "alpha"), [(1.0, 1.0, 2.0), (2.0, 0.5, 1.0), (5.0, 3.0, 3.0)])
def test_matches_lightly(n: int, d: int, t: float, lam: float, alpha: float) -> None:
    z_a, z_b = _pair(n, d, seed=n * d)
    ours = HypersphereLoss(t, lam, alpha)(z_a, z_b)
    theirs = LightlyHypersphereLoss(t, lam, alpha)(z_a, z_b)
    _assert_value_and_grads(ours, theirs, (z_a, z_b))


def test_matches_paper_formula() -> None:
    # Wang & Isola, Eq. 4-5, pair by pair.
    z_a, z_b = _pair(5, 3, seed=1)
    x, y = F.normalize(z_a), F.normalize(z_b)
    align = sum(torch.linalg.vector_norm(x[i] - y[i]) ** 2 for i in range(5)) / 5

    def unif(z: torch.Tensor) -> torch.Tensor:
        pairs = [
            torch.exp(-2.0 * (z[i] - z[j]).square().sum())
            for i in range(5)
            for j in range(i + 1, 5)
        ]
        return torch.log(sum(pairs) / len(pairs))

    expected = align + 0.7 * (unif(x) + unif(y)) / 2
    _assert_value_and_grads(HypersphereLoss(2.0, 0.7)(z_a, z_b), expected, (z_a, z_b))


def test_uniformity_has_finite_gradient_for_identical_rows() -> None:
    # pdist's square root has an infinite derivative at 0; the Gram form does not.
    x = F.normalize(torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]]), dim=1).requires_grad_()
    grad = torch.autograd.grad(uniformity_loss(x, t=2.0), x)[0]
    assert torch.isfinite(grad).all()


def test_uniformity_does_not_underflow() -> None:
    # All pairs at squared distance 2: log mean exp(-2t) = -2t exactly, even for t = 100
    # where exp(-200) underflows in float32.
    assert uniformity_loss(torch.eye(4), t=100.0).item() == pytest.approx(-200.0)
    assert alignment_loss(torch.eye(3), torch.eye(3).roll(1, 0), alpha=1.0).item() == pytest.approx(
        math.sqrt(2)
    )


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"z_a and z_b .* got \(3, 4\) and \(3, 5\)"):
        HypersphereLoss()(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"batch size of at least 2 .*got 1"):
        HypersphereLoss()(torch.randn(1, 4), torch.randn(1, 4))


def test_same_arguments_as_lightly() -> None:
    for method in ("__init__", "forward"):
        mine = inspect.signature(getattr(HypersphereLoss, method)).parameters
        peer = inspect.signature(getattr(LightlyHypersphereLoss, method)).parameters
        assert list(mine)[: len(peer)] == list(peer)
        assert [mine[name].default for name in peer] == [p.default for p in peer.values()]
