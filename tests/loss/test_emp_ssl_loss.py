from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import pytest
import torch
from lightly.loss import EMPSSLLoss as LightlyEMPSSLLoss
from lightly.loss import emp_ssl_loss as lightly_emp
from torch.nn import functional as F

from fastssl.loss import EMPSSLLoss
from fastssl.loss.emp_ssl_loss import invariance_loss, tcr_loss


def _views(v: int, b: int, d: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, d, generator=g).requires_grad_() for _ in range(v)]


def _assert_matches(
    ours_fn: Callable[..., torch.Tensor],
    theirs_fn: Callable[..., torch.Tensor],
    inputs: list[torch.Tensor],
) -> None:
    """Value and gradients of ``ours_fn`` (float32) against ``theirs_fn`` run in float64:
    LightlySSL's float32 logdet of the (dim, dim) matrix loses up to ~1e-3 of the gradient
    when dim > batch (the matrix is then rank deficient plus identity), ours does not."""
    ours_in = [x.detach().clone().requires_grad_() for x in inputs]
    theirs_in = [x.detach().double().requires_grad_() for x in inputs]
    ours, theirs = ours_fn(*ours_in), theirs_fn(*theirs_in)
    torch.testing.assert_close(ours.double(), theirs, rtol=1e-4, atol=1e-5)
    for a, b in zip(
        torch.autograd.grad(ours, ours_in), torch.autograd.grad(theirs, theirs_in), strict=True
    ):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-6)


# (views, batch, dim): dim < batch, dim > batch (the smaller Gram matrix), one view.
SHAPES = [(2, 8, 4), (4, 5, 12), (1, 6, 6), (3, 3, 2)]


@pytest.mark.parametrize(("v", "b", "d"), SHAPES)
@pytest.mark.parametrize(("tcr_eps", "inv_coef"), [(0.2, 200.0), (0.5, 1.0), (1e-2, 0.0)])
def test_matches_lightly(v: int, b: int, d: int, tcr_eps: float, inv_coef: float) -> None:
    _assert_matches(
        lambda *z: EMPSSLLoss(tcr_eps, inv_coef)(list(z)),
        lambda *z: LightlyEMPSSLLoss(tcr_eps, inv_coef)(list(z)),
        _views(v, b, d, seed=v * b + d),
    )


@pytest.mark.parametrize(("v", "b", "d"), SHAPES)
def test_terms_match_lightly(v: int, b: int, d: int) -> None:
    z = torch.stack(_views(v, b, d, seed=1))
    _assert_matches(lambda x: tcr_loss(x, 0.3), lambda x: lightly_emp.tcr_loss(x, 0.3), [z])
    _assert_matches(invariance_loss, lightly_emp.invariance_loss, [z])


def test_tcr_matches_paper_formula() -> None:
    # R(Z) = 1/2 logdet(I + d / (b eps) Z^T Z), in float64 through the eigenvalues.
    z = torch.randn(3, 7, 5, dtype=torch.float64)
    expected = torch.stack(
        [0.5 * torch.log1p(5 / (7 * 0.4) * torch.linalg.eigvalsh(zv.T @ zv)).sum() for zv in z]
    ).mean()
    torch.testing.assert_close(tcr_loss(z, 0.4), expected)


def test_tcr_of_orthonormal_columns() -> None:
    # Z^T Z = I: R = d/2 * log(1 + d / (b eps)).
    b, d, eps = 6, 3, 0.5
    z = torch.linalg.qr(torch.randn(b, d))[0].unsqueeze(0)
    assert math.isclose(tcr_loss(z, eps).item(), d / 2 * math.log(1 + d / (b * eps)), rel_tol=1e-5)


def test_invariance_formula() -> None:
    z = torch.randn(4, 5, 3)
    mean = z.mean(0)
    expected = -sum(F.cosine_similarity(z[v], mean, dim=1).mean() for v in range(4)) / 4
    torch.testing.assert_close(invariance_loss(z), expected)
    assert invariance_loss(z[:1]).item() == pytest.approx(-1.0)  # one view is its own mean


def test_maximize_coding_rate_flips_the_rate() -> None:
    views = _views(3, 6, 4)
    z = torch.stack(views)
    added = EMPSSLLoss(0.2, 10.0)(views)
    subtracted = EMPSSLLoss(0.2, 10.0, maximize_coding_rate=True)(views)
    torch.testing.assert_close(added - subtracted, 2 * tcr_loss(z, 0.2))
    torch.testing.assert_close(subtracted, -tcr_loss(z, 0.2) + 10.0 * invariance_loss(z))
    # The paper's objective prefers spread embeddings to collapsed ones (same invariance).
    spread = [torch.eye(4)[:, :4].repeat(2, 1)] * 2
    collapsed = [torch.ones(8, 4)] * 2
    loss_fn = EMPSSLLoss(maximize_coding_rate=True)
    assert loss_fn(spread) < loss_fn(collapsed)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"tcr_eps must be > 0, got tcr_eps=0.0"):
        EMPSSLLoss(tcr_eps=0.0)
    with pytest.raises(ValueError, match=r"at least one view"):
        EMPSSLLoss()([])
    with pytest.raises(
        ValueError, match=r"one shape \(batch_size, dim\), got \[\(4, 3\), \(4, 2\)\]"
    ):
        EMPSSLLoss()([torch.randn(4, 3), torch.randn(4, 2)])
    with pytest.raises(ValueError, match=r"z must have shape \(num_views, batch_size, dim\)"):
        tcr_loss(torch.randn(4, 3), 0.2)
    with pytest.raises(ValueError, match=r"eps must be > 0, got eps=-1"):
        tcr_loss(torch.randn(2, 4, 3), -1)


def test_same_arguments_as_lightly() -> None:
    for ours, theirs in [
        (EMPSSLLoss.__init__, LightlyEMPSSLLoss.__init__),
        (EMPSSLLoss.forward, LightlyEMPSSLLoss.forward),
        (tcr_loss, lightly_emp.tcr_loss),
        (invariance_loss, lightly_emp.invariance_loss),
    ]:
        mine = inspect.signature(ours).parameters
        peer = inspect.signature(theirs).parameters
        assert list(mine)[: len(peer)] == list(peer)
        assert [mine[name].default for name in peer] == [p.default for p in peer.values()]
