from __future__ import annotations

import math
import re

import pytest
import torch
from lightly.loss import msn_loss as lightly_msn
from torch import Tensor, nn

from fastssl.loss.msn_loss import MSNLoss, prototype_probabilities, sharpen, sinkhorn
from fastssl.loss.pmsn_loss import PMSNLoss
from fastssl.utils import dist
from tests._distributed import run_distributed

D, K = 8, 5


def _inputs(batch: int, views: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    anchors = torch.randn(views * batch, D, generator=g).requires_grad_()
    targets = torch.randn(batch, D, generator=g).requires_grad_()
    prototypes = torch.randn(K, D, generator=g).requires_grad_()
    return anchors, targets, prototypes


def _naive_msn(
    anchors: Tensor,
    targets: Tensor,
    prototypes: Tensor,
    temperature: float,
    sharpen_temperature: float,
    iterations: int,
    weight: float,
) -> Tensor:
    """MSN's loss written per sample from the paper, Sinkhorn as a float64 loop."""
    a = anchors / anchors.norm(dim=1, keepdim=True)
    t = (targets / targets.norm(dim=1, keepdim=True)).detach()
    p = prototypes / prototypes.norm(dim=1, keepdim=True)
    batch = t.shape[0]
    target_probs = []
    for b in range(batch):
        probs = torch.softmax(p.detach() @ t[b] / temperature, dim=0)
        sharp = probs ** (1 / sharpen_temperature)
        target_probs.append(sharp / sharp.sum())
    q = torch.stack(target_probs).double()
    if iterations > 0:
        q = q / q.sum()
        for _ in range(iterations):
            for k in range(q.shape[1]):
                q[:, k] = q[:, k] / q[:, k].sum() / q.shape[1]
            for b in range(batch):
                q[b] = q[b] / q[b].sum() / batch
        q = q * batch
    q = q.float()
    anchor_probs = [torch.softmax(p @ a[i] / temperature, dim=0) for i in range(len(a))]
    ce = torch.stack(
        [-(q[i % batch] * torch.log(anchor_probs[i])).sum() for i in range(len(a))]
    ).mean()
    mean_probs = torch.stack(anchor_probs).mean(dim=0)
    entropy = -(mean_probs * torch.log(mean_probs)).sum()
    return ce + weight * (math.log(len(mean_probs)) - entropy)


CASES = [
    # (views, init kwargs, target_sharpen_temperature)
    (1, {}, 0.25),
    (3, {}, 0.25),
    (2, {"temperature": 0.3, "sinkhorn_iterations": 0}, 0.5),
    (2, {"sinkhorn_iterations": 7, "regularization_weight": 0.0}, 0.25),
    (4, {"regularization_weight": 2.5}, 1.0),
]


@pytest.mark.parametrize(("views", "init", "sharpen_temp"), CASES)
def test_matches_lightly_values_and_gradients(views: int, init: dict, sharpen_temp: float) -> None:
    inputs = _inputs(batch=6, views=views, seed=views)
    loss = MSNLoss(**init)(*inputs, target_sharpen_temperature=sharpen_temp)
    expected = lightly_msn.MSNLoss(**init)(*inputs, target_sharpen_temperature=sharpen_temp)
    assert loss.shape == expected.shape == torch.Size([])
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    expected_grads = torch.autograd.grad(expected, inputs, allow_unused=True)
    assert grads[1] is None and expected_grads[1] is None  # targets: no gradient
    for g, e in zip(grads[::2], expected_grads[::2], strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("views", "init", "sharpen_temp"), CASES)
def test_matches_paper_formula(views: int, init: dict, sharpen_temp: float) -> None:
    inputs = _inputs(batch=4, views=views, seed=10 + views)
    settings = {"temperature": 0.1, "sinkhorn_iterations": 3, "regularization_weight": 1.0}
    settings.update(init)
    loss = MSNLoss(**settings)(*inputs, target_sharpen_temperature=sharpen_temp)
    expected = _naive_msn(
        *inputs,
        settings["temperature"],
        sharpen_temp,
        settings["sinkhorn_iterations"],
        settings["regularization_weight"],
    )
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)


def test_helpers_match_lightly_and_formulas() -> None:
    g = torch.Generator().manual_seed(0)
    queries, prototypes = torch.randn(4, D, generator=g), torch.randn(K, D, generator=g)
    probs = prototype_probabilities(queries, prototypes, 0.2)
    torch.testing.assert_close(probs, lightly_msn.prototype_probabilities(queries, prototypes, 0.2))
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(4))
    torch.testing.assert_close(
        probs[1, 2],
        torch.exp(queries[1] @ prototypes[2] / 0.2)
        / torch.exp(queries[1] @ prototypes.T / 0.2).sum(),
    )
    sharp = sharpen(probs, 0.5)
    torch.testing.assert_close(sharp, lightly_msn.sharpen(probs.clone(), 0.5))
    torch.testing.assert_close(sharp[0], probs[0] ** 2 / (probs[0] ** 2).sum())
    for iterations in [0, 1, 3]:
        torch.testing.assert_close(
            sinkhorn(probs, iterations), lightly_msn.sinkhorn(probs.clone(), iterations)
        )
    assert sinkhorn(probs, 0) is probs
    balanced = sinkhorn(probs, 300)
    torch.testing.assert_close(balanced.sum(dim=1), torch.ones(4))
    torch.testing.assert_close(balanced.sum(dim=0), torch.full((K,), 4 / K), rtol=1e-4, atol=1e-4)


def test_regularization_loss_is_kl_to_uniform() -> None:
    p = torch.softmax(torch.randn(K), dim=0)
    expected = (p * torch.log(p * K)).sum()
    torch.testing.assert_close(MSNLoss().regularization_loss(p), expected)
    torch.testing.assert_close(
        MSNLoss().regularization_loss(torch.full((K,), 1 / K)), torch.tensor(0.0), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        MSNLoss().regularization_loss(p), lightly_msn.MSNLoss().regularization_loss(p)
    )
    # A prototype nobody uses contributes 0 log 0 = 0, not NaN.
    one_hot = torch.tensor([1.0, 0.0, 0.0])
    torch.testing.assert_close(MSNLoss().regularization_loss(one_hot), torch.tensor(math.log(3)))


def test_underflowing_anchor_probability_stays_finite() -> None:
    # Anchor on prototype 0, target on prototype 1: p_anchor[1] = exp(-200) underflows to 0
    # in float32 and LightlySSL's log(p ** -q) is inf; the exact loss is ~200.
    anchors, targets = torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 0.0]])
    prototypes = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    kwargs = {"temperature": 0.01, "sinkhorn_iterations": 0, "regularization_weight": 0.0}
    assert torch.isinf(lightly_msn.MSNLoss(**kwargs)(anchors, targets, prototypes))
    loss = MSNLoss(**kwargs)(anchors, targets, prototypes)
    torch.testing.assert_close(loss, torch.tensor(200.0))


def test_deterministic() -> None:
    inputs = _inputs(4, 2, seed=0)
    assert torch.equal(MSNLoss()(*inputs), MSNLoss()(*inputs))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 0.0}, "MSNLoss 'temperature' must be in (0, inf), got temperature=0.0"),
        (
            {"sinkhorn_iterations": -2},
            "'sinkhorn_iterations' must be >= 0, got sinkhorn_iterations=-2",
        ),
        (
            {"regularization_weight": -1.0},
            "'regularization_weight' must be >= 0, got regularization_weight=-1.0",
        ),
    ],
)
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        MSNLoss(**kwargs)


def test_anchor_count_not_multiple_of_targets_raises() -> None:
    with pytest.raises(ValueError, match=re.escape("got anchors (7, 8) and targets (3, 8)")):
        MSNLoss()(torch.randn(7, D), torch.randn(3, D), torch.randn(K, D))


@pytest.mark.compile
@pytest.mark.parametrize("loss_cls", [MSNLoss, PMSNLoss])
def test_compile_fullgraph_matches_eager(loss_cls: type[MSNLoss]) -> None:
    torch._dynamo.reset()
    loss_fn = loss_cls()
    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    inputs = _inputs(4, 2, seed=0)
    loss, expected = compiled(*inputs), loss_fn(*inputs)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(
        torch.autograd.grad(loss, inputs[2])[0], torch.autograd.grad(expected, inputs[2])[0]
    )


def _msn_step(global_batch: int, gather: bool) -> list[dict]:
    """One MSN/PMSN step of a small model on this process's share, for several settings."""
    r, w = dist.rank(), dist.world_size()
    n = global_batch // w
    results = []
    for loss_cls, kwargs in [
        (MSNLoss, {}),
        (MSNLoss, {"sinkhorn_iterations": 0, "regularization_weight": 3.0}),
        (PMSNLoss, {"power_law_exponent": 0.5}),
    ]:
        torch.manual_seed(0)
        model, target_model = nn.Linear(4, D), nn.Linear(4, D)
        prototypes = nn.Parameter(torch.randn(K, D))
        views = torch.randn(2, global_batch, 4)[:, r * n : (r + 1) * n]
        targets_in = torch.randn(global_batch, 4)[r * n : (r + 1) * n]
        anchors = model(views.reshape(-1, 4))  # view-major (2 * n, D)
        with torch.no_grad():
            targets = target_model(targets_in)
        loss = loss_cls(gather_distributed=gather, **kwargs)(anchors, targets, prototypes)
        loss.backward()
        probs = sharpen(prototype_probabilities(targets, prototypes.detach(), 0.1), 0.25)
        results.append(
            {
                "loss": loss.detach(),
                "grads": [model.weight.grad, model.bias.grad, prototypes.grad],
                "codes": sinkhorn(probs, 3, gather_distributed=gather),
            }
        )
    return results


@pytest.mark.dist
def test_two_processes_codes_and_gradients_equal_full_batch() -> None:
    per_rank = run_distributed(_msn_step, 2, 8, True)
    full = _msn_step(8, False)
    for case, expected in enumerate(full):
        ranks = [r[case] for r in per_rank]
        codes = torch.cat([ranks[0]["codes"], ranks[1]["codes"]])
        torch.testing.assert_close(codes, expected["codes"], rtol=1e-4, atol=1e-6)
        # Every process adds the same regularizer of the global mean probabilities.
        torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, expected["loss"])
        for g0, g1, e in zip(ranks[0]["grads"], ranks[1]["grads"], expected["grads"], strict=True):
            torch.testing.assert_close((g0 + g1) / 2, e, atol=1e-5, rtol=1e-4)
