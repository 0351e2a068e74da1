from __future__ import annotations

import pytest
import torch
from lightly.loss import BarlowTwinsLoss as LightlyBarlowTwinsLoss

from fastssl.loss.barlow_twins_loss import BarlowTwinsLoss, barlow_twins_loss, standardize
from tests._distributed import run_distributed
from tests.loss._ddp import assert_ddp_matches_full_batch, ddp_worker, full_batch


def _pair(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, d, generator=g).requires_grad_(),
        torch.randn(n, d, generator=g).requires_grad_(),
    )


def _naive_barlow(z_a: torch.Tensor, z_b: torch.Tensor, lambda_param: float) -> torch.Tensor:
    """Zbontar et al., Eq. 1-2, entry by entry."""
    n, d = z_a.shape

    def norm(z: torch.Tensor) -> torch.Tensor:
        mean = z.sum(0) / n
        var = ((z - mean) ** 2).sum(0) / n
        return (z - mean) / torch.sqrt(var + 1e-5)

    a, b = norm(z_a), norm(z_b)
    loss = torch.zeros(())
    for i in range(d):
        for j in range(d):
            c = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss = loss + ((1 - c) ** 2 if i == j else lambda_param * c**2)
    return loss


@pytest.mark.parametrize("n", [2, 3, 16])
@pytest.mark.parametrize("lambda_param", [5e-3, 0.1, 0.0])
def test_matches_lightly(n: int, lambda_param: float) -> None:
    z_a, z_b = _pair(n, 6)
    ours = BarlowTwinsLoss(lambda_param)(z_a, z_b)
    theirs = LightlyBarlowTwinsLoss(lambda_param)(z_a, z_b)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    for a, b in zip(
        torch.autograd.grad(ours, (z_a, z_b)), torch.autograd.grad(theirs, (z_a, z_b)), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n", [2, 5])
def test_matches_paper_formula(n: int) -> None:
    z_a, z_b = _pair(n, 4, seed=n)
    expected = _naive_barlow(z_a, z_b, 0.05)
    ours = barlow_twins_loss(z_a, z_b, 0.05)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        torch.autograd.grad(ours, z_a)[0],
        torch.autograd.grad(expected, z_a)[0],
        rtol=1e-4,
        atol=1e-5,
    )


def test_standardize_equals_batch_norm() -> None:
    z = torch.randn(7, 3) * 4 + 2
    expected = torch.nn.BatchNorm1d(3, affine=False)(z)
    torch.testing.assert_close(standardize(z), expected)


def test_identical_decorrelated_views_give_zero() -> None:
    # Orthogonal columns of equal norm: c is the identity, so both terms vanish.
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert BarlowTwinsLoss()(z, z).item() == pytest.approx(0.0, abs=1e-4)


@pytest.mark.compile
def test_compile_fullgraph() -> None:
    torch._dynamo.reset()
    loss_fn = BarlowTwinsLoss()
    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    z_a, z_b = _pair(4, 6)
    torch.testing.assert_close(compiled(z_a, z_b), loss_fn(z_a, z_b))


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"lambda_param must be >= 0, got lambda_param=-1"):
        BarlowTwinsLoss(lambda_param=-1)
    with pytest.raises(ValueError, match=r"batch size of at least 2 .* got 1"):
        BarlowTwinsLoss()(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match=r"got \(2, 4\) and \(3, 4\)"):
        BarlowTwinsLoss()(torch.randn(2, 4), torch.randn(3, 4))


# Shifted, scaled inputs make the per-process batch statistics clearly differ from the
# global ones, which is where LightlySSL 1.6 goes wrong (issues #1920, #1977).
DDP_CASES = [
    {"loss_cls": BarlowTwinsLoss, "kwargs": {}, "global_batch": 8, "dim": 5, "steps": 1},
    {
        "loss_cls": BarlowTwinsLoss,
        "kwargs": {"lambda_param": 0.1},
        "global_batch": 4,
        "dim": 3,
        "steps": 1,
    },
]
LIGHTLY_CASE = {**DDP_CASES[0], "loss_cls": LightlyBarlowTwinsLoss}


@pytest.mark.dist
def test_ddp_gradients_equal_full_batch_unlike_lightly() -> None:
    per_rank = run_distributed(ddp_worker, 2, [*DDP_CASES, LIGHTLY_CASE])
    for i, case in enumerate(DDP_CASES):
        assert_ddp_matches_full_batch(case, [r[i] for r in per_rank])
    # Every process computes the same (global) loss.
    torch.testing.assert_close(per_rank[0][0]["losses"][0], per_rank[1][0]["losses"][0])
    lightly_grad = torch.stack([r[-1]["grads"][0][0] for r in per_rank]).mean(dim=0)
    full_grad = full_batch(LIGHTLY_CASE)["grads"][0][0]
    assert (lightly_grad - full_grad).abs().max() > 1e-3
