from __future__ import annotations

import pytest
import torch
from lightly.loss import TiCoLoss as LightlyTiCoLoss
from torch.nn import functional as F

from fastssl.loss.tico_loss import TiCoLoss, tico_loss
from tests._distributed import run_distributed
from tests.loss._ddp import assert_ddp_matches_full_batch, ddp_worker


def _pair(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, d, generator=g).requires_grad_(),
        torch.randn(n, d, generator=g).requires_grad_(),
    )


@pytest.mark.parametrize("n", [2, 3, 16])
@pytest.mark.parametrize(("beta", "rho"), [(0.9, 8.0), (0.5, 1.0), (0.0, 20.0)])
def test_matches_lightly_over_steps(n: int, beta: float, rho: float) -> None:
    ours, theirs = TiCoLoss(beta, rho), LightlyTiCoLoss(beta, rho)
    for step in range(3):
        z_a, z_b = _pair(n, 6, seed=step)
        a, b = ours(z_a, z_b), theirs(z_a, z_b)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        for ga, gb in zip(
            torch.autograd.grad(a, (z_a, z_b)), torch.autograd.grad(b, (z_a, z_b)), strict=True
        ):
            torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)
        assert ours.C is not None and theirs.C is not None
        torch.testing.assert_close(ours.C, theirs.C, rtol=1e-4, atol=1e-7)


def test_matches_paper_formula_and_keeps_state_when_asked() -> None:
    loss_fn = TiCoLoss(beta=0.8, rho=4.0)
    z_a, z_b = _pair(5, 4)
    za, zb = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
    covariance = 0.2 * sum(torch.outer(v, v) for v in za.detach()) / 5
    expected = (
        1
        - sum(torch.dot(za[i], zb[i]) for i in range(5)) / 5
        + 4.0 * sum(za[i] @ covariance @ za[i] for i in range(5)) / 5
    )
    torch.testing.assert_close(loss_fn(z_a, z_b, update_covariance_matrix=False), expected)
    assert loss_fn.C is None
    torch.testing.assert_close(loss_fn(z_a, z_b), expected)
    assert loss_fn.C is not None
    torch.testing.assert_close(loss_fn.C, covariance)
    value, new_c = tico_loss(z_a, z_b, None, beta=0.8, rho=4.0)
    torch.testing.assert_close(value, expected)
    assert not new_c.requires_grad


@pytest.mark.compile
def test_compile_fullgraph() -> None:
    torch._dynamo.reset()
    eager, module = TiCoLoss(), TiCoLoss()
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    for step in range(3):
        z_a, z_b = _pair(4, 6, seed=step)
        torch.testing.assert_close(compiled(z_a, z_b), eager(z_a, z_b))
    assert module.C is not None and eager.C is not None
    torch.testing.assert_close(module.C, eager.C)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\].*got beta=1.5"):
        TiCoLoss(beta=1.5)
    with pytest.raises(ValueError, match=r"at least 2, got 1"):
        TiCoLoss()(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match=r"got \(2, 4\) and \(2, 5\)"):
        TiCoLoss()(torch.randn(2, 4), torch.randn(2, 5))


DDP_CASES = [
    {"loss_cls": TiCoLoss, "kwargs": {"beta": 0.7}, "global_batch": 8, "dim": 5, "steps": 3},
]


@pytest.mark.dist
def test_ddp_gradients_equal_full_batch() -> None:
    per_rank = run_distributed(ddp_worker, 2, DDP_CASES)
    for i, case in enumerate(DDP_CASES):
        assert_ddp_matches_full_batch(case, [r[i] for r in per_rank])
