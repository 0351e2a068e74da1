"""VISReg tests. The shape term draws its slices with ``torch.randn(D, num_slices)`` like
LightlySSL 1.6 (same RNG consumption, checked below), so both sides are seeded identically
and compared value by value."""

from __future__ import annotations

import re
from statistics import NormalDist
from typing import Any

import pytest
import torch
from lightly.loss import VISRegLoss as LightlyVISRegLoss
from lightly.loss import VISRegLossComponents as LightlyVISRegLossComponents
from lightly.loss import visreg_loss as lightly_visreg
from torch import nn

from fastssl.loss.visreg_loss import (
    VISRegLoss,
    VISRegLossComponents,
    visreg_center_loss,
    visreg_scale_loss,
    visreg_shape_loss,
)
from fastssl.utils import dist
from tests._distributed import run_distributed
from tests.loss._ddp import assert_ddp_matches_full_batch, ddp_worker, run_steps


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).requires_grad_()


def _assert_value_and_grads(
    ours: torch.Tensor, theirs: torch.Tensor, inputs: tuple[torch.Tensor, ...]
) -> None:
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    for a, b in zip(
        torch.autograd.grad(ours, inputs), torch.autograd.grad(theirs, inputs), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape", [(8, 4), (3, 6, 5), (2, 2, 4, 3)])
def test_center_and_scale_match_lightly_and_formula(shape: tuple[int, ...]) -> None:
    z = _randn(*shape, seed=len(shape))
    center, scale = visreg_center_loss(z), visreg_scale_loss(z)
    _assert_value_and_grads(center, lightly_visreg.visreg_center_loss(z), (z,))
    _assert_value_and_grads(scale, lightly_visreg.visreg_scale_loss(z), (z,))
    x = z.detach().reshape(-1, *shape[-2:])
    n = shape[-2]
    means = [x[v, :, j].sum() / n for v in range(x.shape[0]) for j in range(shape[-1])]
    stds = [
        ((x[v, :, j] - x[v, :, j].mean()) ** 2).sum().div(n).sqrt()
        for v in range(x.shape[0])
        for j in range(shape[-1])
    ]
    torch.testing.assert_close(center.detach(), torch.stack(means).square().mean())
    torch.testing.assert_close(scale.detach(), (1 - torch.stack(stds)).square().mean())


@pytest.mark.parametrize("shape", [(16, 4), (3, 9, 5), (2, 2, 6, 3)])
@pytest.mark.parametrize(("num_slices", "eps"), [(1, 1e-4), (7, 1e-2), (64, 1e-4)])
def test_shape_loss_matches_lightly(shape: tuple[int, ...], num_slices: int, eps: float) -> None:
    z = _randn(*shape, seed=num_slices)
    torch.manual_seed(1)
    ours = visreg_shape_loss(z, num_slices, eps)
    after_ours = torch.randn(3)
    torch.manual_seed(1)
    theirs = lightly_visreg.visreg_shape_loss(z, num_slices, eps)
    assert torch.equal(after_ours, torch.randn(3))  # the same random numbers were drawn
    _assert_value_and_grads(ours, theirs, (z,))


def test_shape_loss_is_the_sliced_wasserstein_distance() -> None:
    """Eq. 5: mean over slices and samples of (sorted standardised projection - normal
    quantile at i/(N+1))^2, with the quantiles from Python's statistics module."""
    n, d, slices, eps = 9, 3, 4, 1e-4
    z = _randn(n, d, seed=2).detach().double()
    torch.manual_seed(3)
    loss = visreg_shape_loss(z, slices, eps)
    torch.manual_seed(3)
    directions = torch.randn(d, slices, dtype=torch.float64)
    directions = directions / directions.norm(dim=0)
    standardized = (z - z.mean(0)) / (z.std(0, unbiased=False) + eps)
    quantiles = [NormalDist().inv_cdf(i / (n + 1)) for i in range(1, n + 1)]
    total = 0.0
    for s in range(slices):
        projected = sorted((standardized @ directions[:, s]).tolist())
        total += sum((p - q) ** 2 for p, q in zip(projected, quantiles, strict=True))
    torch.testing.assert_close(loss.item(), total / (n * slices), rtol=1e-6, atol=1e-9)


def test_shape_loss_statistics() -> None:
    """Gaussian samples score low, non-Gaussian ones high; the scale does not matter."""
    torch.manual_seed(0)
    gaussian = torch.randn(2048, 8)
    two_clusters = torch.randn(2048, 8) * 0.1 + torch.randint(0, 2, (2048, 1)) * 4.0
    low = visreg_shape_loss(gaussian, 32)
    assert low < 0.01
    assert visreg_shape_loss(two_clusters, 32) > 10 * low
    torch.manual_seed(1)
    scaled = visreg_shape_loss(5.0 * gaussian + 2.0, 32)
    torch.manual_seed(1)
    torch.testing.assert_close(scaled, visreg_shape_loss(gaussian, 32), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize(("local_views", "global_views"), [(0, 1), (3, 2)])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_slices": 32},
        {"lambda_param": 0.6, "num_slices": 5, "lambda_scale": 2.0, "lambda_shape": 0.5},
        {"lambda_param": 1.0, "num_slices": 3, "lambda_center": 0.0, "eps": 1e-2},
    ],
)
def test_loss_and_components_match_lightly(
    local_views: int, global_views: int, kwargs: dict
) -> None:
    local_proj = _randn(local_views, 10, 6, seed=1)
    global_proj = _randn(global_views, 10, 6, seed=2)
    views = {"local_proj": local_proj, "global_proj": global_proj}
    torch.manual_seed(7)
    ours = VISRegLoss(**kwargs).forward_components(**views)
    torch.manual_seed(7)
    theirs = LightlyVISRegLoss(**kwargs).forward_components(**views)
    assert isinstance(ours, VISRegLossComponents)
    assert ours._fields == LightlyVISRegLossComponents._fields
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    inputs = (local_proj, global_proj) if local_views else (global_proj,)
    _assert_value_and_grads(ours.total, theirs.total, inputs)
    torch.manual_seed(7)
    total = VISRegLoss(**kwargs)(**views)
    torch.testing.assert_close(total, ours.total.detach())
    lam = kwargs.get("lambda_param", 0.9)
    reg = (
        kwargs.get("lambda_scale", 1.0) * ours.scale
        + kwargs.get("lambda_shape", 1.0) * ours.shape
        + kwargs.get("lambda_center", 1.0) * ours.center
    )
    torch.testing.assert_close(ours.total, (1 - lam) * ours.pred + lam * reg)


def test_rejects_bad_arguments() -> None:
    for kwargs, message in [
        ({"lambda_param": -0.1}, "'lambda_param' must be in [0, 1], got lambda_param=-0.1"),
        ({"num_slices": 0}, "'num_slices' must be a positive integer, got num_slices=0"),
        ({"lambda_shape": -1.0}, "'lambda_shape' must be >= 0, got lambda_shape=-1.0"),
        ({"eps": 0.0}, "'eps' must be > 0, got eps=0.0"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            VISRegLoss(**kwargs)
    with pytest.raises(ValueError, match=re.escape("'num_slices' must be a positive integer")):
        visreg_shape_loss(torch.zeros(4, 2), 0)
    with pytest.raises(ValueError, match=re.escape("'eps' must be > 0, got eps=-1")):
        visreg_shape_loss(torch.zeros(4, 2), 2, eps=-1)
    loss_fn = VISRegLoss()
    ok = torch.zeros(2, 4, 3)
    for local, global_, message in [
        (torch.zeros(4, 3), ok, "local_proj must have shape (V_local, N, D), got (4, 3)"),
        (ok, torch.zeros(4, 3), "global_proj must have shape (V_global, N, D), got (4, 3)"),
        (ok, torch.zeros(2, 5, 3), "same batch size and dimension, got (2, 4, 3) and (2, 5, 3)"),
        (torch.zeros(2, 1, 3), torch.zeros(1, 1, 3), "batch size N of at least 2"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            loss_fn(local_proj=local, global_proj=global_)


# Distributed: the harness's (z_a, z_b) become two global views and one local view. Both
# ranks are seeded alike by the harness, so with gather_distributed they draw the slices
# of the full-batch run and every rank computes the full-batch regularisation.
class _VISRegOnPairs(nn.Module):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.loss = VISRegLoss(num_slices=16, **kwargs)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        global_proj = torch.stack([z_a, z_b])
        return self.loss(local_proj=(z_a - z_b).unsqueeze(0), global_proj=global_proj)


DDP_CASES = [
    {"loss_cls": _VISRegOnPairs, "kwargs": {}, "global_batch": 8, "dim": 5, "steps": 2},
    {
        "loss_cls": _VISRegOnPairs,
        "kwargs": {"lambda_param": 0.5, "lambda_shape": 3.0},
        "global_batch": 4,
        "dim": 3,
        "steps": 1,
    },
]


def _both_options(cases: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """gather_distributed=True (the shared harness) and False on this rank's rows."""
    local = []
    for case in cases:
        n = case["global_batch"] // dist.world_size()
        rows = slice(dist.rank() * n, (dist.rank() + 1) * n)
        kwargs = {**case["kwargs"], "gather_distributed": False}
        local.append(
            run_steps(case["loss_cls"], kwargs, case["global_batch"], case["dim"], 1, rows)
        )
    return ddp_worker(cases), local


@pytest.mark.dist
def test_ddp_gather_distributed_true_and_false() -> None:
    per_rank = run_distributed(_both_options, 2, DDP_CASES)
    for i, case in enumerate(DDP_CASES):
        assert_ddp_matches_full_batch(case, [r[0][i] for r in per_rank])
        n = case["global_batch"] // 2
        kwargs = {**case["kwargs"], "gather_distributed": False}
        for rank, result in enumerate(per_rank):
            rows = slice(rank * n, (rank + 1) * n)
            alone = run_steps(case["loss_cls"], kwargs, case["global_batch"], case["dim"], 1, rows)
            torch.testing.assert_close(result[1][i]["losses"], alone["losses"])
            torch.testing.assert_close(result[1][i]["grads"], alone["grads"])
