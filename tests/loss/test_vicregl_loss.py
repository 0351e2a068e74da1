from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from lightly.loss import VICRegLLoss as LightlyVICRegLLoss
from torch import nn

from fastssl.loss.vicreg_loss import vicreg_loss
from fastssl.loss.vicregl_loss import VICRegLLoss
from fastssl.utils import dist
from tests._distributed import run_distributed
from tests.loss._ddp import assert_ddp_matches_full_batch, ddp_worker, run_steps

View = tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]


def _views(num: int, size: int, batch: int, g: torch.Generator) -> list[View]:
    """Random views: (global (B, 5), local (B, size, size, 4)) and a random grid."""
    return [
        (
            (
                torch.randn(batch, 5, generator=g).requires_grad_(),
                torch.randn(batch, size, size, 4, generator=g).requires_grad_(),
            ),
            # Random (not regular) grids: no two grid distances tie, so the matching is
            # unique and both implementations must pick the same pairs.
            torch.rand(batch, size, size, 2, generator=g) * size,
        )
        for _ in range(num)
    ]


def _kwargs(global_views: list[View], local_views: list[View] | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "global_view_features": [f for f, _ in global_views],
        "global_view_grids": [g for _, g in global_views],
    }
    if local_views is not None:
        kwargs["local_view_features"] = [f for f, _ in local_views]
        kwargs["local_view_grids"] = [g for _, g in local_views]
    return kwargs


def _inputs(views: list[View]) -> list[torch.Tensor]:
    return [t for (features, _) in views for t in features]


@pytest.mark.parametrize(("num_global", "num_local"), [(2, 0), (2, 3), (3, 1)])
@pytest.mark.parametrize("num_matches", [(20, 4), (3, 2), (-1, -1)])
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"lambda_param": 1.0, "mu_param": 2.0, "nu_param": 3.0, "alpha": 0.4, "eps": 1e-2},
    ],
)
def test_matches_lightly(
    num_global: int, num_local: int, num_matches: tuple[int, int], params: dict
) -> None:
    g = torch.Generator().manual_seed(num_global * 10 + num_local)
    global_views = _views(num_global, 3, 4, g)
    local_views = _views(num_local, 2, 4, g) if num_local else None
    kwargs = _kwargs(global_views, local_views)
    ours = VICRegLLoss(num_matches=num_matches, **params)(**kwargs)
    theirs = LightlyVICRegLLoss(num_matches=num_matches, **params)(**kwargs)
    assert ours.shape == theirs.shape == (1,)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    inputs = _inputs(global_views + (local_views or []))
    for a, b in zip(
        torch.autograd.grad(ours, inputs), torch.autograd.grad(theirs, inputs), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_global_loss_is_vicreg_with_half_covariance() -> None:
    """alpha=1, two global views: lambda*inv + mu*mean(var) + nu*mean(cov) (Bardes 2022)."""
    g = torch.Generator().manual_seed(1)
    views = _views(2, 2, 6, g)
    loss = VICRegLLoss(lambda_param=2.0, mu_param=3.0, nu_param=4.0, alpha=1.0)(
        **_kwargs(views, None)
    )
    (z_a, _), (z_b, _) = (f for f, _ in views)
    expected = vicreg_loss(z_a, z_b, lambda_param=2.0, mu_param=3.0, nu_param=2.0)
    torch.testing.assert_close(loss, expected.reshape(1), rtol=1e-5, atol=1e-6)


def _naive_matches(
    z_in: torch.Tensor, z_cand: torch.Tensor, distances: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: each input's nearest candidate, keep the k closest pairs (loops)."""
    d = distances.detach()
    kept_in, kept_cand = [], []
    for b in range(z_in.shape[0]):
        pairs = []
        for i in range(z_in.shape[1]):
            j = min(range(z_cand.shape[1]), key=lambda c, i=i: float(d[b, i, c]))
            pairs.append((float(d[b, i, j]), i, j))
        pairs.sort()
        kept_in.append(torch.stack([z_in[b, i] for _, i, _ in pairs[:k]]))
        kept_cand.append(torch.stack([z_cand[b, j] for _, _, j in pairs[:k]]))
    return torch.stack(kept_in), torch.stack(kept_cand)


def test_local_loss_matches_naive_nearest_neighbour_matching() -> None:
    """alpha=0, one global and one local view: the VICRegL local loss written out."""
    g = torch.Generator().manual_seed(2)
    global_views, local_views = _views(1, 3, 5, g), _views(1, 2, 5, g)
    num_matches = (4, 3)
    loss_fn = VICRegLLoss(alpha=0.0, num_matches=num_matches, nu_param=2.0)
    loss = loss_fn(**_kwargs(global_views, local_views))

    z_a = global_views[0][0][1].flatten(1, 2)
    z_b = local_views[0][0][1].flatten(1, 2)
    grid_a, grid_b = global_views[0][1].flatten(1, 2), local_views[0][1].flatten(1, 2)
    expected = torch.zeros(())
    for d in (torch.cdist(z_a, z_b), torch.cdist(grid_a, grid_b)):
        a = _naive_matches(z_a, z_b, d, num_matches[0])
        b = _naive_matches(z_b, z_a, d.transpose(1, 2), num_matches[1])
        expected = expected + 0.5 * (vicreg_loss(*a, nu_param=1.0) + vicreg_loss(*b, nu_param=1.0))
    torch.testing.assert_close(loss, expected.reshape(1), rtol=1e-5, atol=1e-6)


def test_rejects_bad_arguments() -> None:
    g = torch.Generator().manual_seed(3)
    views = _views(2, 2, 3, g)
    features, grids = [f for f, _ in views], [g for _, g in views]
    loss_fn = VICRegLLoss()
    with pytest.raises(ValueError, match=r"global_view_features and global_view_grids .*2 and 1"):
        loss_fn(features, grids[:1])
    with pytest.raises(ValueError, match=r"both be given or both be None, got list and NoneType"):
        loss_fn(features, grids, local_view_features=features)
    with pytest.raises(ValueError, match=r"local_view_features and local_view_grids .*2 and 1"):
        loss_fn(features, grids, features, grids[:1])
    with pytest.raises(ValueError, match=re.escape("at least one view, got none")):
        loss_fn([], [])


# Distributed: a wrapper turns the (batch, 12) outputs of the shared DDP harness into two
# global views (global features and a 2x2 map of 3-d local features) and one local view.
_GRIDS = torch.rand(3, 2, 2, 2, generator=torch.Generator().manual_seed(5)) * 2


class _VICRegLOnPairs(nn.Module):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.loss = VICRegLLoss(**kwargs)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        b = z_a.shape[0]
        global_views = [(z, z.reshape(b, 2, 2, 3)) for z in (z_a, z_b)]
        local_views = [(z_a * z_b, (z_a - z_b)[:, :6].reshape(b, 1, 2, 3))]
        grids = [_GRIDS[i].expand(b, -1, -1, -1) for i in range(2)]
        local_grids = [_GRIDS[2, :1].expand(b, -1, -1, -1)]
        # The harness averages scalar losses; VICRegLLoss returns shape (1,).
        return self.loss(global_views, grids, local_views, local_grids).squeeze(0)


DDP_CASES = [
    {"loss_cls": _VICRegLOnPairs, "kwargs": {}, "global_batch": 8, "dim": 12, "steps": 1},
    {
        "loss_cls": _VICRegLOnPairs,
        "kwargs": {"num_matches": (3, 1), "alpha": 0.3, "nu_param": 2.0},
        "global_batch": 8,
        "dim": 12,
        "steps": 2,
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
        # True: the rank-mean of losses and gradients is the full-batch one.
        assert_ddp_matches_full_batch(case, [r[0][i] for r in per_rank])
        # False: each rank computes the loss of its own rows only.
        for rank, result in enumerate(per_rank):
            n = case["global_batch"] // 2
            kwargs = {**case["kwargs"], "gather_distributed": False}
            alone = run_steps(
                case["loss_cls"], kwargs, case["global_batch"], case["dim"], 1,
                slice(rank * n, (rank + 1) * n),
            )  # fmt: skip
            torch.testing.assert_close(result[1][i]["losses"], alone["losses"])
            torch.testing.assert_close(result[1][i]["grads"], alone["grads"])
        full = run_steps(
            case["loss_cls"], case["kwargs"], case["global_batch"], case["dim"], 1, slice(None)
        )
        mean_false = (per_rank[0][1][i]["losses"][0] + per_rank[1][1][i]["losses"][0]) / 2
        # Without gathering the variances use half batches: not the full-batch loss.
        assert not torch.allclose(mean_false, full["losses"][0], rtol=1e-3)
