from __future__ import annotations

import inspect

import pytest
import torch
from lightly.loss import MACLLoss as LightlyMACLLoss
from torch.nn import functional as F

from fastssl.loss import MACLLoss
from fastssl.loss.macl_loss import macl_loss


def _pair(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, d, generator=g).requires_grad_(),
        torch.randn(n, d, generator=g).requires_grad_(),
    )


def _value_and_grads(loss: torch.Tensor, z0: torch.Tensor, z1: torch.Tensor) -> list[torch.Tensor]:
    return [loss.detach(), *torch.autograd.grad(loss, (z0, z1))]


def _assert_all_close(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> None:
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.usefixtures("loss_path")
@pytest.mark.parametrize(("n", "d"), [(1, 4), (2, 8), (6, 5), (16, 3)])
@pytest.mark.parametrize(
    ("temperature", "alpha", "A_0"), [(0.1, 0.5, 0.0), (0.5, 1.0, 0.3), (0.2, 0.0, 1.0)]
)
def test_matches_lightly(n: int, d: int, temperature: float, alpha: float, A_0: float) -> None:
    z0, z1 = _pair(n, d, seed=n + d)
    ours = MACLLoss(temperature, alpha, A_0)(z0, z1)
    theirs = LightlyMACLLoss(temperature, alpha, A_0)(z0, z1)
    _assert_all_close(_value_and_grads(ours, z0, z1), _value_and_grads(theirs, z0, z1))


def _naive_macl(
    z0: torch.Tensor, z1: torch.Tensor, t0: float, alpha: float, a0: float
) -> torch.Tensor:
    """Huang et al., Eq. 5-7, sample by sample."""
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    n = z0.shape[0]
    alignment = torch.stack([torch.dot(z[i], z[i + n]) for i in range(n)]).detach().mean()
    t = t0 * (1 + alpha * (alignment - a0))
    terms = []
    for a in range(2 * n):
        positive = torch.exp(torch.dot(z[a], z[(a + n) % (2 * n)]) / t)
        denominator = sum(torch.exp(torch.dot(z[a], z[b]) / t) for b in range(2 * n) if b != a)
        p = positive / denominator
        terms.append(-torch.log(p) / (1 - p.detach() + 1e-8))
    return torch.stack(terms).mean()


@pytest.mark.usefixtures("loss_path")
@pytest.mark.parametrize(("n", "alpha", "A_0"), [(2, 0.5, 0.0), (5, 1.0, 0.5)])
def test_matches_naive_loop(n: int, alpha: float, A_0: float) -> None:
    z0, z1 = _pair(n, 4, seed=n)
    ours = macl_loss(z0, z1, 0.3, alpha, A_0)
    expected = _naive_macl(z0, z1, 0.3, alpha, A_0)
    _assert_all_close(_value_and_grads(ours, z0, z1), _value_and_grads(expected, z0, z1))


def test_accurate_when_the_positive_dominates() -> None:
    # 1 - P = 2 exp(-20) ~ 4e-9 is below the float32 resolution of P: a softmax over all
    # columns rounds P to 1 and every term to 0 (LightlySSL returns 0), while the loss is
    # (1 - P) / (1 - P + eps) ~ 0.29 since -log P ~ 1 - P.
    z0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    z1 = z0.clone()
    one_minus_p = 2 * torch.exp(torch.tensor(-1 / 0.05, dtype=torch.float64))  # 2 negatives
    expected = (one_minus_p / (one_minus_p + 1e-8)).item()  # -log P ~ 1 - P
    loss = macl_loss(z0.float(), z1.float(), temperature=0.05, alpha=0.0)
    assert abs(loss.item() - expected) < 1e-3 * expected


def test_single_pair_gives_zero() -> None:
    z0, z1 = _pair(1, 4)
    loss = MACLLoss()(z0, z1)
    assert loss.item() == 0.0
    assert torch.equal(torch.autograd.grad(loss, z0)[0], torch.zeros_like(z0))


@pytest.mark.compile
def test_compile_fullgraph() -> None:
    # The temperature is a tensor (no .item() sync), so the loss traces in one graph.
    torch._dynamo.reset()
    z0, z1 = _pair(5, 4)
    compiled = torch.compile(MACLLoss(), backend="aot_eager", fullgraph=True)
    _assert_all_close(
        _value_and_grads(compiled(z0, z1), z0, z1), _value_and_grads(MACLLoss()(z0, z1), z0, z1)
    )


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"temperature must be >= 1e-8, got temperature=0.0"):
        MACLLoss(temperature=0.0)
    with pytest.raises(ValueError, match=r"alpha must be in the range \[0, 1\], got alpha=1.5"):
        MACLLoss(alpha=1.5)
    with pytest.raises(ValueError, match=r"A_0 must be in the range \[0, 1\], got A_0=-0.1"):
        MACLLoss(A_0=-0.1)
    with pytest.raises(ValueError, match=r"z0 and z1 .* got \(3, 4\) and \(3, 5\)"):
        MACLLoss()(torch.randn(3, 4), torch.randn(3, 5))


def test_same_arguments_as_lightly() -> None:
    for method in ("__init__", "forward"):
        mine = inspect.signature(getattr(MACLLoss, method)).parameters
        peer = inspect.signature(getattr(LightlyMACLLoss, method)).parameters
        assert list(mine)[: len(peer)] == list(peer)
        assert [mine[name].default for name in peer] == [p.default for p in peer.values()]
