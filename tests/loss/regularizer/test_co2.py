from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from lightly.loss.regularizer import CO2Regularizer as LightlyCO2Regularizer
from torch.nn import functional as F

from fastssl.loss.regularizer import CO2Regularizer
from fastssl.loss.regularizer.co2 import co2_divergence


def _pair(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, d, generator=g).requires_grad_(),
        torch.randn(n, d, generator=g).requires_grad_(),
    )


def _lightly_differentiable(
    reg: LightlyCO2Regularizer, out0: torch.Tensor, out1: torch.Tensor
) -> torch.Tensor:
    """LightlySSL's regulariser without its final ``torch.tensor(...)`` copy (which drops
    the gradient): its own bank update, pseudo-labels and KL divergence."""
    out0, out1 = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
    out1, negatives = reg.memory_bank(out1, update=True)
    p = reg._get_pseudo_labels(out0, out1, negatives)
    q = reg._get_pseudo_labels(out1, out0, negatives)
    return reg.alpha * 0.5 * (reg.kl_div(p, q) + reg.kl_div(q, p))


def _seeded(cls: type, *args: object) -> torch.nn.Module:
    torch.manual_seed(5)  # the same random bank
    module: torch.nn.Module = cls(*args)
    return module


@pytest.mark.parametrize(("n", "d"), [(1, 4), (4, 8), (7, 3)])
@pytest.mark.parametrize(
    ("alpha", "t", "bank_rows"), [(1.0, 0.05, 0), (0.3, 0.5, 0), (1.0, 0.1, 10), (2.0, 0.2, 4)]
)
def test_matches_lightly_over_steps(n: int, d: int, alpha: float, t: float, bank_rows: int) -> None:
    size = (bank_rows, d) if bank_rows else 0
    ours = _seeded(CO2Regularizer, alpha, t, size)
    theirs = _seeded(LightlyCO2Regularizer, alpha, t, size)
    theirs_with_grad = _seeded(LightlyCO2Regularizer, alpha, t, size)
    for step in range(3):
        out0, out1 = _pair(n, d, seed=step)
        loss = ours(out0, out1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # its torch.tensor(tensor) copy
            value = theirs(out0, out1)
        assert not value.requires_grad  # LightlySSL 1.6 returns no gradient
        torch.testing.assert_close(loss.detach(), value, rtol=1e-4, atol=1e-6)
        expected = _lightly_differentiable(theirs_with_grad, out0, out1)
        for a, b in zip(
            torch.autograd.grad(loss, (out0, out1)),
            torch.autograd.grad(expected, (out0, out1)),
            strict=True,
        ):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        if bank_rows:
            torch.testing.assert_close(ours.memory_bank.bank, theirs.memory_bank.bank)
            assert torch.equal(ours.memory_bank.bank_ptr, theirs.memory_bank.bank_ptr)


def test_matches_naive_symmetric_kl() -> None:
    # CO2 (Wei et al. 2021), Eq. 4: the pseudo-label of query i over [positive, negatives],
    # written with explicit KL sums; in-batch negatives are the other rows of the other view.
    out0, out1 = (F.normalize(x, dim=1) for x in _pair(4, 3, seed=1))
    t = 0.2
    total = torch.zeros(())
    for i in range(4):
        others = [j for j in range(4) if j != i]
        lp = torch.stack([out0[i] @ out1[i]] + [out0[i] @ out1[j] for j in others]) / t
        lq = torch.stack([out1[i] @ out0[i]] + [out1[i] @ out0[j] for j in others]) / t
        p, q = lp.softmax(0), lq.softmax(0)
        total = total + (p * (p / q).log()).sum() + (q * (q / p).log()).sum()
    torch.testing.assert_close(co2_divergence(out0, out1, None, t), total / 4)


def test_bank_holds_past_batches_only() -> None:
    reg = CO2Regularizer(memory_bank_size=(6, 3))
    bank_before = reg.memory_bank.bank.clone()
    out0, out1 = _pair(2, 3)
    loss = reg(out0, out1)
    expected = 0.5 * co2_divergence(F.normalize(out0), F.normalize(out1), bank_before.T, 0.05)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(reg.memory_bank.bank[:2], F.normalize(out1.detach()))
    assert int(reg.memory_bank.bank_ptr) == 2


def test_identical_views_give_zero() -> None:
    out = torch.randn(5, 4)
    assert CO2Regularizer()(out, out).item() == pytest.approx(0.0, abs=1e-6)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"abs\(t_consistency\) >= 1e-8, got 0.0"):
        CO2Regularizer(t_consistency=0.0)
    with pytest.raises(ValueError, match=r"does not give the feature dimension"):
        CO2Regularizer(memory_bank_size=5)
    with pytest.raises(ValueError, match=r"out0 and out1 .* got \(3, 4\) and \(3, 5\)"):
        CO2Regularizer()(torch.randn(3, 4), torch.randn(3, 5))


def test_same_arguments_as_lightly() -> None:
    for method in ("__init__", "forward"):
        mine = inspect.signature(getattr(CO2Regularizer, method)).parameters
        peer = inspect.signature(getattr(LightlyCO2Regularizer, method)).parameters
        assert list(mine)[: len(peer)] == list(peer)
        assert [mine[name].default for name in peer] == [p.default for p in peer.values()]
