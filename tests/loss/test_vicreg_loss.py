from __future__ import annotations

import pytest
import torch
from lightly.loss import VICRegLoss as LightlyVICRegLoss
from lightly.loss import vicreg_loss as lightly_vicreg

from fastssl.loss.vicreg_loss import (
    VICRegLoss,
    covariance_loss,
    invariance_loss,
    variance_loss,
    vicreg_loss,
)
from tests._distributed import run_distributed
from tests.loss._ddp import assert_ddp_matches_full_batch, ddp_worker


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(shape, generator=g).requires_grad_(),
        torch.randn(shape, generator=g).requires_grad_(),
    )


@pytest.mark.parametrize("shape", [(2, 6), (5, 6), (16, 3), (4, 3, 5)])
@pytest.mark.parametrize(
    "params", [(25.0, 25.0, 1.0, 1e-4), (1.0, 0.5, 2.0, 1e-2), (0.0, 0.0, 1.0, 0.0)]
)
def test_matches_lightly(shape: tuple[int, ...], params: tuple[float, ...]) -> None:
    lam, mu, nu, eps = params
    z_a, z_b = _pair(shape)
    ours = VICRegLoss(lam, mu, nu, eps=eps)(z_a, z_b)
    theirs = LightlyVICRegLoss(lam, mu, nu, eps=eps)(z_a, z_b)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    for a, b in zip(
        torch.autograd.grad(ours, (z_a, z_b)), torch.autograd.grad(theirs, (z_a, z_b)), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 4), (6, 2, 4)])
def test_terms_match_lightly(shape: tuple[int, ...]) -> None:
    x, y = _pair(shape, seed=1)
    torch.testing.assert_close(invariance_loss(x, y), lightly_vicreg.invariance_loss(x, y))
    torch.testing.assert_close(variance_loss(x, 1e-3), lightly_vicreg.variance_loss(x, 1e-3))
    torch.testing.assert_close(covariance_loss(x), lightly_vicreg.covariance_loss(x))


def test_matches_paper_formula() -> None:
    """Bardes et al., Eq. 1-5, feature by feature."""
    z_a, z_b = _pair((5, 3), seed=2)
    n, d = z_a.shape

    def var_term(z: torch.Tensor) -> torch.Tensor:
        stds = [
            torch.sqrt(((z[:, j] - z[:, j].mean()) ** 2).sum() / (n - 1) + 1e-4) for j in range(d)
        ]
        return sum(torch.clamp(1 - s, min=0) for s in stds) / d

    def cov_term(z: torch.Tensor) -> torch.Tensor:
        zc = z - z.mean(0)
        total = sum(
            (sum(zc[k, i] * zc[k, j] for k in range(n)) / (n - 1)) ** 2
            for i in range(d)
            for j in range(d)
            if i != j
        )
        return total / d

    invariance = sum(((z_a[i] - z_b[i]) ** 2).sum() for i in range(n)) / (n * d)
    expected = (
        25 * invariance + 25 * 0.5 * (var_term(z_a) + var_term(z_b)) + cov_term(z_a) + cov_term(z_b)
    )
    torch.testing.assert_close(vicreg_loss(z_a, z_b), expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        torch.autograd.grad(vicreg_loss(z_a, z_b), z_a)[0],
        torch.autograd.grad(expected, z_a)[0],
        rtol=1e-4,
        atol=1e-6,
    )


@pytest.mark.compile
@pytest.mark.parametrize("shape", [(4, 6), (4, 2, 6)])
def test_compile_fullgraph(shape: tuple[int, ...]) -> None:
    torch._dynamo.reset()
    loss_fn = VICRegLoss()
    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    z_a, z_b = _pair(shape)
    torch.testing.assert_close(compiled(z_a, z_b), loss_fn(z_a, z_b))


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"eps must be >= 0 .*got eps=-0.1"):
        VICRegLoss(eps=-0.1)
    with pytest.raises(ValueError, match=r"at least 2 \(variances\), got 1"):
        VICRegLoss()(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match=r"same shape, got \(2, 4\) and \(2, 3\)"):
        VICRegLoss()(torch.randn(2, 4), torch.randn(2, 3))


DDP_CASES = [
    {"loss_cls": VICRegLoss, "kwargs": {}, "global_batch": 8, "dim": 5, "steps": 1},
    {
        "loss_cls": VICRegLoss,
        "kwargs": {"lambda_param": 1.0, "mu_param": 2.0, "nu_param": 3.0},
        "global_batch": 4,
        "dim": 3,
        "steps": 1,
    },
]


@pytest.mark.dist
def test_ddp_gradients_equal_full_batch() -> None:
    per_rank = run_distributed(ddp_worker, 2, DDP_CASES)
    for i, case in enumerate(DDP_CASES):
        assert_ddp_matches_full_batch(case, [r[i] for r in per_rank])
