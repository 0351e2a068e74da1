"""LeJEPA tests. SIGReg draws its random directions with ``torch.randn(D, num_vectors)`` like
LightlySSL 1.6 (same RNG consumption, checked below), so both sides are seeded identically
and compared value by value."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch
from lightly.loss import LeJEPALoss as LightlyLeJEPALoss
from lightly.loss import SIGReg as LightlySIGReg
from lightly.loss.lejepa_loss import lejepa_invariance_loss as lightly_invariance
from torch import nn

from fastssl.loss.lejepa_loss import LeJEPALoss, SIGReg, lejepa_invariance_loss
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


@pytest.mark.parametrize(("views", "globals_"), [(3, 2), (1, 1), (8, 2)])
def test_invariance_matches_lightly_and_formula(views: int, globals_: int) -> None:
    all_proj = _randn(views, 4, 5, seed=views)
    global_proj = all_proj[:globals_]
    ours = lejepa_invariance_loss(all_proj=all_proj, global_proj=global_proj)
    _assert_value_and_grads(
        ours, lightly_invariance(all_proj=all_proj, global_proj=global_proj), (all_proj,)
    )
    x = all_proj.detach()
    center = sum(x[g] for g in range(globals_)) / globals_
    naive = sum(((x[v] - center) ** 2).mean() for v in range(views)) / views
    torch.testing.assert_close(ours.detach(), naive)


@pytest.mark.parametrize("shape", [(16, 4), (3, 10, 6), (2, 2, 8, 3)])
@pytest.mark.parametrize(
    "kwargs", [{}, {"knots": 5, "t_max": 1.5, "num_vectors": 7}, {"knots": 2, "num_vectors": 1}]
)
def test_sigreg_matches_lightly_with_the_same_seed(shape: tuple[int, ...], kwargs: dict) -> None:
    proj = _randn(*shape, seed=len(shape))
    ours_fn, theirs_fn = SIGReg(**kwargs), LightlySIGReg(**kwargs)
    for name in ("t", "phi", "weights"):
        torch.testing.assert_close(getattr(ours_fn, name), getattr(theirs_fn, name))
    assert ours_fn.state_dict().keys() == theirs_fn.state_dict().keys()
    torch.manual_seed(3)
    ours = ours_fn(proj)
    after_ours = torch.randn(3)
    torch.manual_seed(3)
    theirs = theirs_fn(proj)
    # Same numbers drawn: the global generator ends in the same state.
    assert torch.equal(after_ours, torch.randn(3))
    _assert_value_and_grads(ours, theirs, (proj,))


def test_sigreg_is_the_epps_pulley_statistic() -> None:
    """N * int_{-t_max}^{t_max} |ecf(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt on random slices,
    with the complex empirical characteristic function and the trapezoidal rule over the
    symmetric grid, averaged over slices (LeJEPA, Balestriero and LeCun 2025)."""
    n, d, slices, knots, t_max = 32, 5, 6, 9, 2.0
    proj = _randn(n, d, seed=4).detach().double()
    torch.manual_seed(5)
    loss = SIGReg(knots=knots, t_max=t_max, num_vectors=slices)(proj)
    torch.manual_seed(5)
    directions = torch.randn(d, slices, dtype=torch.float64)
    directions = directions / directions.norm(dim=0)

    t = torch.linspace(-t_max, t_max, 2 * knots - 1, dtype=torch.float64)
    step = float(t[1] - t[0])
    expected = []
    for s in range(slices):
        x = proj @ directions[:, s]
        values = []
        for tk in t:
            ecf = torch.exp(1j * tk * x).mean()
            phi = math.exp(-(float(tk) ** 2) / 2)
            values.append(abs(ecf - phi) ** 2 * phi)
        integral = step * (sum(values) - 0.5 * (values[0] + values[-1]))
        expected.append(n * integral)
    torch.testing.assert_close(loss, torch.stack(expected).mean().to(loss.dtype))


def test_sigreg_statistics_for_gaussian_and_non_gaussian_samples() -> None:
    """For N standard normal samples E|ecf(t) - phi(t)|^2 = (1 - phi(t)^2) / N, so the
    expected statistic is int (1 - exp(-t^2)) exp(-t^2/2) dt (about 1.06 for t_max=3),
    whatever N. Scaled, shifted or collapsed samples give a statistic that grows with N."""
    torch.manual_seed(0)
    sigreg = SIGReg(num_vectors=64)
    t = torch.linspace(-3, 3, 33, dtype=torch.float64)
    integrand = (1 - torch.exp(-(t**2))) * torch.exp(-(t**2) / 2)
    expected = torch.trapezoid(integrand, t).item()
    gaussian = torch.randn(8, 1024, 16)
    observed = torch.stack([sigreg(batch) for batch in gaussian]).mean().item()
    assert observed == pytest.approx(expected, rel=0.15)
    for bad in (3 * gaussian[0], gaussian[0] + 1, 0.5 * gaussian[0], torch.zeros(1024, 16)):
        assert sigreg(bad) > 100 * expected


@pytest.mark.parametrize(("local_views", "global_views"), [(1, 1), (4, 2)])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"sigreg_num_vectors": 16},
        {"lambda_param": 0.5, "sigreg_knots": 7, "sigreg_t_max": 2.0, "sigreg_num_vectors": 5},
        {"lambda_param": 0.0},
        {"lambda_param": 1.0, "sigreg_num_vectors": 3},
    ],
)
def test_lejepa_loss_matches_lightly(local_views: int, global_views: int, kwargs: dict) -> None:
    local_proj = _randn(local_views, 12, 6, seed=1)
    global_proj = _randn(global_views, 12, 6, seed=2)
    torch.manual_seed(9)
    ours = LeJEPALoss(**kwargs)(local_proj=local_proj, global_proj=global_proj)
    torch.manual_seed(9)
    theirs = LightlyLeJEPALoss(**kwargs)(local_proj=local_proj, global_proj=global_proj)
    _assert_value_and_grads(ours, theirs, (local_proj, global_proj))


def test_rejects_bad_arguments() -> None:
    for kwargs, message in [
        ({"knots": 1}, "'knots' must be an integer > 1, got knots=1"),
        ({"t_max": 0.0}, "'t_max' must be > 0, got t_max=0.0"),
        ({"num_vectors": 0}, "'num_vectors' must be a positive integer, got num_vectors=0"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            SIGReg(**kwargs)
    with pytest.raises(TypeError):
        SIGReg(17)  # type: ignore[misc]  # keyword-only, as in LightlySSL
    with pytest.raises(ValueError, match=re.escape("'lambda_param' must be in [0, 1], got")):
        LeJEPALoss(lambda_param=1.5)
    with pytest.raises(ValueError, match="'knots' must be an integer > 1"):
        LeJEPALoss(sigreg_knots=0)
    loss_fn = LeJEPALoss()
    ok = torch.zeros(2, 4, 3)
    for local, global_, message in [
        (torch.zeros(4, 3), ok, "local_proj must have shape (V_local, N, D), got (4, 3)"),
        (ok, torch.zeros(4, 3), "global_proj must have shape (V_global, N, D), got (4, 3)"),
        (torch.zeros(0, 4, 3), ok, "local_proj must hold at least one local view"),
        (ok, torch.zeros(2, 5, 3), "same batch size and dimension, got (2, 4, 3) and (2, 5, 3)"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            loss_fn(local_proj=local, global_proj=global_)


# Distributed: wrappers give the shared harness's (z_a, z_b) interface. With
# ``seed_by_rank`` every process draws different directions (seed 1000 + rank), so the
# gathered run matches the full batch (rank 0's seed) only if rank 0's directions are
# shared with every process.
class _SIGRegOnPairs(nn.Module):
    def __init__(self, seed_by_rank: bool = False, **kwargs: Any) -> None:
        super().__init__()
        if seed_by_rank:
            torch.manual_seed(1000 + dist.rank())
        self.loss = SIGReg(num_vectors=16, **kwargs)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return self.loss(torch.stack([z_a, z_b]))


class _LeJEPAOnPairs(nn.Module):
    def __init__(self, seed_by_rank: bool = False, **kwargs: Any) -> None:
        super().__init__()
        if seed_by_rank:
            torch.manual_seed(1000 + dist.rank())
        self.loss = LeJEPALoss(sigreg_num_vectors=16, **kwargs)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        global_proj = torch.stack([z_a, z_b])
        return self.loss(local_proj=(z_a * z_b).unsqueeze(0), global_proj=global_proj)


DDP_CASES = [
    {
        "loss_cls": _SIGRegOnPairs,
        "kwargs": {"seed_by_rank": True},
        "global_batch": 8,
        "dim": 5,
        "steps": 2,
    },
    {
        "loss_cls": _LeJEPAOnPairs,
        "kwargs": {"seed_by_rank": True, "lambda_param": 0.4},
        "global_batch": 8,
        "dim": 5,
        "steps": 1,
    },
]


def _local_kwargs(case: dict[str, Any]) -> dict[str, Any]:
    return {**case["kwargs"], "seed_by_rank": False, "gather_distributed": False}


def _both_options(cases: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """gather_distributed=True (the shared harness) and False on this rank's rows."""
    local = []
    for case in cases:
        n = case["global_batch"] // dist.world_size()
        rows = slice(dist.rank() * n, (dist.rank() + 1) * n)
        local.append(
            run_steps(
                case["loss_cls"], _local_kwargs(case), case["global_batch"], case["dim"], 1, rows
            )
        )
    return ddp_worker(cases), local


@pytest.mark.dist
def test_ddp_gather_distributed_true_and_false() -> None:
    per_rank = run_distributed(_both_options, 2, DDP_CASES)
    for i, case in enumerate(DDP_CASES):
        # True: every rank computes SIGReg of the global batch with rank 0's directions.
        assert_ddp_matches_full_batch(case, [r[0][i] for r in per_rank])
        # False: each rank regularises its own rows only.
        n = case["global_batch"] // 2
        for rank, result in enumerate(per_rank):
            rows = slice(rank * n, (rank + 1) * n)
            alone = run_steps(
                case["loss_cls"], _local_kwargs(case), case["global_batch"], case["dim"], 1, rows
            )
            torch.testing.assert_close(result[1][i]["losses"], alone["losses"])
            torch.testing.assert_close(result[1][i]["grads"], alone["grads"])
