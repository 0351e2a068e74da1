from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from lightly.loss import CAPILoss as LightlyCAPILoss
from lightly.loss.capi_loss import sinkhorn_knopp as lightly_sinkhorn_knopp
from torch import nn

from fastssl.loss.capi_loss import CAPILoss, sinkhorn_knopp
from fastssl.utils import dist
from tests._distributed import run_distributed
from tests.loss._ddp import assert_ddp_matches_full_batch, ddp_worker, run_steps


@pytest.mark.parametrize(("batch", "tokens", "clusters"), [(4, 9, 7), (2, 1, 3), (8, 16, 32)])
@pytest.mark.parametrize("with_index", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"teacher_temperature": 0.5, "student_temperature": 0.2, "sinkhorn_iterations": 1}],
)
def test_matches_lightly(
    batch: int, tokens: int, clusters: int, with_index: bool, kwargs: dict
) -> None:
    g = torch.Generator().manual_seed(batch + tokens)
    teacher = torch.randn(batch, tokens, clusters, generator=g).requires_grad_()
    index = torch.randint(0, tokens, (batch, 3), generator=g) if with_index else None
    predicted = 3 if with_index else tokens
    student = torch.randn(batch, predicted, clusters, generator=g).requires_grad_()
    ours = CAPILoss(**kwargs)(teacher, student, index)
    theirs = LightlyCAPILoss(**kwargs)(teacher, student, index)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    ours_grad, teacher_grad = torch.autograd.grad(ours, (student, teacher), allow_unused=True)
    (theirs_grad,) = torch.autograd.grad(theirs, student)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-4, atol=1e-6)
    # The targets are detached: no gradient reaches the teacher logits.
    assert teacher_grad is None


def test_prototype_loss_with_teacher_as_student_matches_lightly() -> None:
    logits = torch.randn(4, 6, 5, requires_grad=True)
    ours = CAPILoss()(logits, logits)
    theirs = LightlyCAPILoss()(logits, logits)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        torch.autograd.grad(ours, logits)[0],
        torch.autograd.grad(theirs, logits)[0],
        rtol=1e-4,
        atol=1e-6,
    )


@pytest.mark.parametrize("iterations", [0, 1, 3, 10])
@pytest.mark.parametrize("scale", [1.0, 100.0])  # large logits: the max shift avoids overflow
def test_sinkhorn_knopp_matches_lightly(iterations: int, scale: float) -> None:
    logits = torch.randn(5, 4, 6, generator=torch.Generator().manual_seed(1)) * scale
    ours = sinkhorn_knopp(logits, iterations=iterations)
    torch.testing.assert_close(
        ours, lightly_sinkhorn_knopp(logits, iterations=iterations), rtol=1e-4, atol=1e-7
    )
    assert torch.isfinite(ours).all()


def test_sinkhorn_knopp_balances_each_position() -> None:
    """After many iterations each position's cluster mass is uniform over the batch, and every
    token holds a distribution over clusters (Sinkhorn's fixed point)."""
    batch, tokens, clusters = 6, 3, 4
    q = sinkhorn_knopp(torch.randn(batch, tokens, clusters), iterations=200)
    torch.testing.assert_close(q.sum(dim=-1), torch.ones(batch, tokens))
    torch.testing.assert_close(
        q.sum(dim=0), torch.full((tokens, clusters), batch / clusters), rtol=1e-4, atol=1e-4
    )


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="'teacher_temperature' must be > 0"):
        CAPILoss(teacher_temperature=0.0)
    with pytest.raises(ValueError, match="'sinkhorn_iterations' must be >= 0"):
        CAPILoss(sinkhorn_iterations=-1)
    loss_fn = CAPILoss()
    with pytest.raises(ValueError, match=re.escape("shape (B, N, K), got (4, 5) and (4, 5)")):
        loss_fn(torch.randn(4, 5), torch.randn(4, 5))
    with pytest.raises(
        ValueError, match=re.escape("(2, 3, 4) to match teacher_logits, got (2, 2, 4)")
    ):
        loss_fn(torch.randn(2, 3, 4), torch.randn(2, 2, 4))
    with pytest.raises(ValueError, match=re.escape("(2, 1, 4) to match teacher_index")):
        loss_fn(torch.randn(2, 3, 4), torch.randn(2, 2, 4), torch.zeros(2, 1, dtype=torch.long))


# Distributed: the shared harness's (batch, 6) outputs become (batch, 2 tokens, 3 clusters);
# z_b plays the teacher, z_a the student predicting the tokens in swapped order.
class _CAPIOnPairs(nn.Module):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.loss = CAPILoss(**kwargs)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        b = z_a.shape[0]
        index = torch.tensor([[1, 0]]).expand(b, -1)
        return self.loss(z_b.reshape(b, 2, 3), z_a.reshape(b, 2, 3), teacher_index=index)


DDP_CASES = [
    {"loss_cls": _CAPIOnPairs, "kwargs": {}, "global_batch": 8, "dim": 6, "steps": 1},
    {
        "loss_cls": _CAPIOnPairs,
        "kwargs": {"teacher_temperature": 0.3, "sinkhorn_iterations": 5},
        "global_batch": 4,
        "dim": 6,
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
        # True: Sinkhorn balances over the global batch, so the rank-mean equals full batch.
        assert_ddp_matches_full_batch(case, [r[0][i] for r in per_rank])
        # False: each rank balances over its own rows only.
        n = case["global_batch"] // 2
        for rank, result in enumerate(per_rank):
            kwargs = {**case["kwargs"], "gather_distributed": False}
            rows = slice(rank * n, (rank + 1) * n)
            alone = run_steps(case["loss_cls"], kwargs, case["global_batch"], case["dim"], 1, rows)
            torch.testing.assert_close(result[1][i]["losses"], alone["losses"])
            torch.testing.assert_close(result[1][i]["grads"], alone["grads"])
        full = run_steps(
            case["loss_cls"], case["kwargs"], case["global_batch"], case["dim"], 1, slice(None)
        )
        mean_false = (per_rank[0][1][i]["losses"][0] + per_rank[1][1][i]["losses"][0]) / 2
        assert not torch.allclose(mean_false, full["losses"][0], rtol=1e-4)
