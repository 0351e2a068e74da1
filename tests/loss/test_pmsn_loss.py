from __future__ import annotations

import re

import pytest
import torch
from lightly.loss import pmsn_loss as lightly_pmsn
from torch import Tensor

from fastssl.loss.msn_loss import MSNLoss
from fastssl.loss.pmsn_loss import PMSNCustomLoss, PMSNLoss, _power_law_distribution

D, K = 8, 6


def _inputs(batch: int, views: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    anchors = torch.randn(views * batch, D, generator=g).requires_grad_()
    targets = torch.randn(batch, D, generator=g)
    prototypes = torch.randn(K, D, generator=g).requires_grad_()
    return anchors, targets, prototypes


def _assert_same_value_and_gradients(loss: Tensor, expected: Tensor, inputs: tuple) -> None:
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)
    differentiable = (inputs[0], inputs[2])
    for g, e in zip(
        torch.autograd.grad(loss, differentiable),
        torch.autograd.grad(expected, differentiable),
        strict=True,
    ):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"power_law_exponent": 1.0},
        {"power_law_exponent": 0.0, "regularization_weight": 2.0},
        {"temperature": 0.25, "sinkhorn_iterations": 0, "power_law_exponent": 0.5},
        {"regularization_weight": 0.0},
    ],
)
@pytest.mark.parametrize("views", [1, 3])
@pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning")
def test_pmsn_matches_lightly(kwargs: dict, views: int) -> None:
    inputs = _inputs(5, views, seed=views)
    _assert_same_value_and_gradients(
        PMSNLoss(**kwargs)(*inputs), lightly_pmsn.PMSNLoss(**kwargs)(*inputs), inputs
    )


def _uniform(mean_anchor_probs: Tensor) -> Tensor:
    return mean_anchor_probs.new_full(mean_anchor_probs.shape, 1.0 / mean_anchor_probs.shape[0])


def _peaked(mean_anchor_probs: Tensor) -> Tensor:
    weights = torch.arange(1.0, mean_anchor_probs.shape[0] + 1) ** 2
    return weights / weights.sum()


@pytest.mark.parametrize("target", [_uniform, _peaked])
@pytest.mark.parametrize("kwargs", [{}, {"regularization_weight": 0.3, "sinkhorn_iterations": 1}])
def test_custom_matches_lightly_and_tensor_prior(target, kwargs: dict) -> None:
    inputs = _inputs(4, 2, seed=7)
    loss = PMSNCustomLoss(target_distribution=target, **kwargs)(*inputs)
    expected = lightly_pmsn.PMSNCustomLoss(target_distribution=target, **kwargs)(*inputs)
    _assert_same_value_and_gradients(loss, expected, inputs)
    # The prior may also be given as a tensor.
    prior = target(torch.empty(K))
    by_tensor = PMSNCustomLoss(target_distribution=prior, **kwargs)(*inputs)
    torch.testing.assert_close(by_tensor, loss.detach())


def test_uniform_prior_equals_msn() -> None:
    # KL(uniform || p) is not MSN's KL(p || uniform), but both vanish at p = uniform and the
    # exponent-0 power law is the uniform prior.
    inputs = _inputs(4, 2, seed=3)
    torch.testing.assert_close(
        PMSNLoss(power_law_exponent=0.0)(*inputs), PMSNCustomLoss(_uniform)(*inputs)
    )
    no_reg = {"regularization_weight": 0.0}
    torch.testing.assert_close(PMSNLoss(**no_reg)(*inputs), MSNLoss(**no_reg)(*inputs))


@pytest.mark.parametrize(("size", "exponent"), [(1, 0.25), (5, 0.25), (7, 1.0), (4, 0.0)])
def test_power_law_distribution_formula(size: int, exponent: float) -> None:
    dist = _power_law_distribution(size, exponent, torch.device("cpu"))
    naive = torch.tensor([k ** (-exponent) for k in range(1, size + 1)])
    torch.testing.assert_close(dist, naive / naive.sum())
    with pytest.warns(UserWarning):  # LightlySSL wraps a tensor in torch.tensor
        expected = lightly_pmsn._power_law_distribution(size, exponent, torch.device("cpu"))
    torch.testing.assert_close(dist, expected)
    assert dist.dtype == torch.float32


@pytest.mark.parametrize("exponent", [0.25, 2.0])
def test_regularization_is_kl_from_prior(exponent: float) -> None:
    p = torch.softmax(torch.randn(K), dim=0)
    prior = [k ** (-exponent) for k in range(1, K + 1)]
    prior = [v / sum(prior) for v in prior]
    naive = sum(q * (torch.log(torch.tensor(q)) - torch.log(p[i])) for i, q in enumerate(prior))
    loss_fn = PMSNLoss(power_law_exponent=exponent)
    torch.testing.assert_close(loss_fn.regularization_loss(p), naive)
    torch.testing.assert_close(loss_fn.regularization_loss(torch.tensor(prior)), torch.tensor(0.0))


def test_custom_prior_with_zero_entry_is_finite() -> None:
    prior = torch.tensor([0.5, 0.5, 0.0])
    loss = PMSNCustomLoss(prior).regularization_loss(torch.tensor([0.25, 0.25, 0.5]))
    torch.testing.assert_close(loss, torch.log(torch.tensor(2.0)))


def test_bad_target_distribution_raises() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "'target_distribution' must be a callable (K,) -> (K,) or a tensor of shape (K,), "
            "got list"
        ),
    ):
        PMSNCustomLoss(target_distribution=[0.5, 0.5])  # type: ignore[arg-type]
    loss_fn = PMSNCustomLoss(target_distribution=torch.ones(3) / 3)
    with pytest.raises(ValueError, match=re.escape("must give a prior of shape (6,), got (3,)")):
        loss_fn(*_inputs(2, 1, seed=0))
    with pytest.raises(ValueError, match=re.escape("PMSNLoss 'temperature' must be in (0, inf)")):
        PMSNLoss(temperature=-1.0)


@pytest.mark.compile
def test_custom_compile_fullgraph_matches_eager() -> None:
    torch._dynamo.reset()
    loss_fn = PMSNCustomLoss(target_distribution=_peaked)
    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    inputs = _inputs(4, 2, seed=0)
    torch.testing.assert_close(compiled(*inputs), loss_fn(*inputs))
