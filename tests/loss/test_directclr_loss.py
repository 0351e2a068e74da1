from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from lightly.loss import DirectCLRLoss as LightlyDirectCLRLoss

from fastssl.loss import DirectCLRLoss, NTXentLoss
from fastssl.utils import dist
from tests._distributed import run_distributed
from tests.loss._ddp import assert_ddp_matches_full_batch, ddp_worker


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(shape, generator=g).requires_grad_(),
        torch.randn(shape, generator=g).requires_grad_(),
    )


def _value_and_grads(
    loss_fn: torch.nn.Module, out0: torch.Tensor, out1: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    loss = loss_fn(out0, out1)
    return (loss.detach(), *torch.autograd.grad(loss, (out0, out1)))


def _assert_all_close(ours: tuple[torch.Tensor, ...], theirs: tuple[torch.Tensor, ...]) -> None:
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.usefixtures("loss_path")
@pytest.mark.parametrize("shape", [(1, 8), (4, 8), (6, 3), (5, 2, 3, 3)])
@pytest.mark.parametrize(("loss_dim", "temperature"), [(64, 0.5), (3, 0.1), (1, -0.2)])
def test_matches_lightly(shape: tuple[int, ...], loss_dim: int, temperature: float) -> None:
    out0, out1 = _pair(shape, seed=loss_dim)
    ours = _value_and_grads(DirectCLRLoss(loss_dim, temperature), out0, out1)
    theirs = _value_and_grads(LightlyDirectCLRLoss(loss_dim, temperature), out0, out1)
    _assert_all_close(ours, theirs)


@pytest.mark.parametrize("bank_size", [4, 10])
def test_memory_bank_matches_lightly(bank_size: int) -> None:
    torch.manual_seed(3)
    ours = DirectCLRLoss(4, 0.2, memory_bank_size=(bank_size, 4))
    torch.manual_seed(3)
    theirs = LightlyDirectCLRLoss(4, 0.2, memory_bank_size=(bank_size, 4))
    for step in range(4):
        out0, out1 = _pair((3, 2, 5), seed=step)  # flattened to 10 features, 4 used
        _assert_all_close(_value_and_grads(ours, out0, out1), _value_and_grads(theirs, out0, out1))
        torch.testing.assert_close(ours.memory_bank.bank, theirs.memory_bank.bank)


def test_is_ntxent_on_the_leading_features() -> None:
    # The features past loss_dim get no gradient and do not change the value.
    out0, out1 = _pair((5, 3, 4))
    loss = DirectCLRLoss(loss_dim=7, temperature=0.3)(out0, out1)
    expected = NTXentLoss(0.3)(out0.flatten(1)[:, :7], out1.flatten(1)[:, :7])
    torch.testing.assert_close(loss, expected)
    grad = torch.autograd.grad(loss, out0)[0].flatten(1)
    assert grad[:, :7].abs().sum() > 0
    assert torch.equal(grad[:, 7:], torch.zeros_like(grad[:, 7:]))
    other0, other1 = out0.detach().clone(), out1.detach().clone()
    other0.view(5, -1)[:, 7:] = 100.0
    torch.testing.assert_close(DirectCLRLoss(7, 0.3)(other0, other1), loss.detach())


@pytest.mark.parametrize("loss_dim", [0, -1, 2.5, True])
def test_rejects_bad_loss_dim(loss_dim: Any) -> None:
    with pytest.raises(ValueError, match=r"loss_dim must be a positive int"):
        DirectCLRLoss(loss_dim=loss_dim)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"abs\(temperature\) must be >= 1e-8"):
        DirectCLRLoss(temperature=0.0)
    with pytest.raises(ValueError, match=r"out0 and out1 .* got \(3, 4\) and \(3, 5\)"):
        DirectCLRLoss(loss_dim=8)(torch.randn(3, 4), torch.randn(3, 5))


def test_same_arguments_as_lightly() -> None:
    for method in ("__init__", "forward"):
        mine = inspect.signature(getattr(DirectCLRLoss, method)).parameters
        peer = inspect.signature(getattr(LightlyDirectCLRLoss, method)).parameters
        assert list(mine)[: len(peer)] == list(peer)
        assert [mine[name].default for name in peer] == [p.default for p in peer.values()]


# ----- two processes -------------------------------------------------------------------------

DDP_CASES = [
    {
        "loss_cls": DirectCLRLoss,
        "kwargs": {"loss_dim": 3, "temperature": 0.3},
        "global_batch": 8,
        "dim": 5,
        "steps": 1,
    },
    {
        "loss_cls": DirectCLRLoss,
        "kwargs": {"loss_dim": 4, "temperature": 0.3, "memory_bank_size": (12, 4)},
        "global_batch": 8,
        "dim": 5,
        "steps": 3,
    },
]


def _worker(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """gather_distributed=True through the shared DDP check; gather_distributed=False (and
    True) against LightlySSL's loss on this rank's half of a fixed batch."""
    out0, out1 = _pair((8, 6), seed=5)
    local = 8 // dist.world_size()
    rows = slice(dist.rank() * local, (dist.rank() + 1) * local)
    out0, out1 = (x.detach()[rows].clone().requires_grad_() for x in (out0, out1))
    compared = {}
    for gather in (True, False):
        compared[gather] = (
            _value_and_grads(DirectCLRLoss(4, 0.2, gather_distributed=gather), out0, out1),
            _value_and_grads(LightlyDirectCLRLoss(4, 0.2, gather_distributed=gather), out0, out1),
        )
    return {"ddp": ddp_worker(cases), "compared": compared}


@pytest.mark.dist
def test_two_processes() -> None:
    per_rank = run_distributed(_worker, 2, DDP_CASES)
    for i, case in enumerate(DDP_CASES):
        assert_ddp_matches_full_batch(case, [r["ddp"][i] for r in per_rank])
    out0, out1 = _pair((8, 6), seed=5)
    for rank, result in enumerate(per_rank):
        for ours, theirs in result["compared"].values():
            _assert_all_close(ours, theirs)
        # Without gathering each rank sees only its own 4 rows.
        rows = slice(4 * rank, 4 * rank + 4)
        alone = DirectCLRLoss(4, 0.2)(out0.detach()[rows], out1.detach()[rows])
        torch.testing.assert_close(result["compared"][False][0][0], alone)
    # With gathering the ranks see different negatives than alone.
    assert not torch.allclose(
        per_rank[0]["compared"][True][0][0], per_rank[0]["compared"][False][0][0]
    )
