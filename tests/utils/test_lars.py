from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from lightly.utils.lars import LARS as LightlyLARS
from torch import nn

from fastssl.utils.lars import LARS

HYPER = [
    {"lr": 0.1},
    {"lr": 0.5, "momentum": 0.9, "weight_decay": 1e-4},
    {"lr": 0.2, "momentum": 0.9, "weight_decay": 0.05, "nesterov": True, "trust_coefficient": 0.02},
    {"lr": 1.0, "momentum": 0.5, "dampening": 0.3, "weight_decay": 0.01, "eps": 1e-3},
    {"lr": 0.3, "weight_decay": 0.1, "trust_coefficient": 0.5},
]


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))


def _groups(model: nn.Module, split: bool) -> list[dict[str, Any]]:
    if not split:
        return [{"params": list(model.parameters())}]
    # The usual SSL setup: weights adapted and decayed, biases excluded.
    weights = [p for p in model.parameters() if p.ndim > 1]
    biases = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": weights}, {"params": biases, "weight_decay": 0.0}]


def _train(
    model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int = 1
) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    trajectory = []
    for _ in range(steps):
        x = torch.randn(8, 5, generator=generator)
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
        trajectory.append([p.detach().clone() for p in model.parameters()])
    return trajectory


def _assert_same_trajectory(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> None:
    for step, (params_a, params_b) in enumerate(zip(a, b, strict=True)):
        for pa, pb in zip(params_a, params_b, strict=True):
            torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-7, msg=f"step {step}")


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("hyper", HYPER)
def test_trajectory_matches_lightly(hyper: dict[str, Any], split: bool, foreach: bool) -> None:
    ours_model, theirs_model = _model(), _model()
    ours = LARS(_groups(ours_model, split), **hyper, foreach=foreach)
    theirs = LightlyLARS(_groups(theirs_model, split), **hyper)
    ours_traj = _train(ours_model, ours, steps=6)
    _assert_same_trajectory(ours_traj, _train(theirs_model, theirs, steps=6))
    assert not torch.equal(ours_traj[0][0], ours_traj[-1][0])  # it did move


class _WithDeadParameter(nn.Module):
    """A model with a zero-initialised weight and a parameter whose gradient is all zeros."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _model()
        with torch.no_grad():
            self.net[0].weight.zero_()  # ||p|| == 0 at the first step
        self.dead = nn.Parameter(torch.randn(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + 0.0 * self.dead  # ||g|| == 0 for dead, at every step


@pytest.mark.parametrize("foreach", [False, True])
def test_zero_norm_parameters_are_not_scaled_like_lightly(foreach: bool) -> None:
    hyper = {"lr": 0.5, "momentum": 0.9, "weight_decay": 0.1}
    ours_model, theirs_model = _WithDeadParameter(), _WithDeadParameter()
    theirs_model.load_state_dict(ours_model.state_dict())
    dead_start = ours_model.dead.detach().clone()
    ours = LARS(ours_model.parameters(), **hyper, foreach=foreach)
    theirs = LightlyLARS(theirs_model.parameters(), **hyper)
    ours_traj = _train(ours_model, ours, 3)
    _assert_same_trajectory(ours_traj, _train(theirs_model, theirs, 3))
    # No gradient, so neither decay nor scaling: the dead parameter never moves.
    assert torch.equal(ours_model.dead.detach(), dead_start)
    assert torch.equal(ours_model.dead.grad, torch.zeros(3))


def test_one_step_equals_the_paper_formula() -> None:
    torch.manual_seed(0)
    weight = nn.Parameter(torch.randn(4, 6))
    grad = torch.randn(4, 6)
    weight.grad = grad.clone()
    lr, wd, eta, eps = 0.3, 0.01, 0.001, 1e-8
    start = weight.detach().clone()
    LARS([weight], lr=lr, weight_decay=wd, trust_coefficient=eta, eps=eps).step()
    # You et al. (2017), Alg. 1 without momentum: local lr = eta * ||w|| / (||g|| + wd ||w||).
    local_lr = eta * start.norm() / (grad.norm() + wd * start.norm() + eps)
    expected = start - lr * local_lr * (grad + wd * start)
    torch.testing.assert_close(weight.detach(), expected)


def test_zero_weight_decay_is_plain_sgd() -> None:
    model_a, model_b = _model(), _model()
    lars = LARS(model_a.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    sgd = torch.optim.SGD(model_b.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    _assert_same_trajectory(_train(model_a, lars, 4), _train(model_b, sgd, 4))


def test_foreach_handles_mixed_dtypes_and_skips_missing_grads() -> None:
    def setup() -> tuple[nn.Module, list[nn.Parameter]]:
        model = _model()
        model[2].double()
        unused = nn.Parameter(torch.ones(2))
        return model, [*model.parameters(), unused]

    hyper = {"lr": 0.2, "momentum": 0.9, "weight_decay": 0.01}
    model_a, params_a = setup()
    model_b, params_b = setup()

    def run(model: nn.Module, params: list[nn.Parameter], foreach: bool) -> list[torch.Tensor]:
        opt = LARS(params, **hyper, foreach=foreach)
        generator = torch.Generator().manual_seed(1)
        for _ in range(3):
            opt.zero_grad()
            hidden = model[1](model[0](torch.randn(8, 5, generator=generator)))
            model[2](hidden.double()).square().mean().backward()
            opt.step()
        assert params[-1].grad is None and torch.equal(params[-1], torch.ones(2))
        assert "momentum_buffer" not in opt.state[params[-1]]
        return [p.detach() for p in params]

    for pa, pb in zip(run(model_a, params_a, True), run(model_b, params_b, False), strict=True):
        assert pa.dtype == pb.dtype
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("foreach", [False, True])
def test_state_dict_round_trip(foreach: bool) -> None:
    hyper = {"lr": 0.5, "momentum": 0.9, "weight_decay": 1e-3, "nesterov": True}
    model = _model()
    optimizer = LARS(_groups(model, split=True), **hyper, foreach=foreach)
    _train(model, optimizer, steps=3, seed=1)
    resumed_model = copy.deepcopy(model)
    resumed = LARS(_groups(resumed_model, split=True), **hyper, foreach=foreach)
    resumed.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    assert all("momentum_buffer" in resumed.state[p] for p in resumed_model.parameters())
    expected = _train(model, optimizer, steps=3, seed=2)
    _assert_same_trajectory(_train(resumed_model, resumed, steps=3, seed=2), expected)

    # The state is lightly's too: a lightly LARS continues from it identically.
    lightly_model = copy.deepcopy(resumed_model)
    lightly_opt = LightlyLARS(_groups(lightly_model, split=True), **hyper)
    lightly_opt.load_state_dict(copy.deepcopy(resumed.state_dict()))
    _assert_same_trajectory(
        _train(lightly_model, lightly_opt, steps=2, seed=3),
        _train(resumed_model, resumed, steps=2, seed=3),
    )


def test_step_returns_the_closure_loss() -> None:
    model = _model()
    optimizer = LARS(model.parameters(), lr=0.1)
    x = torch.randn(2, 5)

    def closure() -> float:
        optimizer.zero_grad()
        loss = model(x).square().sum()
        loss.backward()
        return loss.item()

    before = model(x).square().sum().item()
    assert optimizer.step(closure) == before
    assert model(x).square().sum().item() < before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -0.1}, r"lr must be >= 0, got -0.1"),
        ({"momentum": -0.5}, r"momentum must be >= 0, got -0.5"),
        ({"weight_decay": -1e-4}, r"weight_decay must be >= 0, got -0.0001"),
        ({"eps": -1.0}, r"eps must be >= 0, got -1.0"),
        ({"trust_coefficient": 0.0}, r"trust_coefficient must be > 0, got 0.0"),
        (
            {"nesterov": True},
            r"nesterov=True needs momentum > 0 and dampening == 0, got momentum=0",
        ),
        (
            {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
            r"got momentum=0.9 and dampening=0.1",
        ),
    ],
)
def test_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    kwargs = {"lr": 0.1} | kwargs
    with pytest.raises(ValueError, match=match):
        LARS(_model().parameters(), **kwargs)
