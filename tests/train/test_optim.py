"""The optimizer recipe: learning-rate scaling, parameter groups, optimizers, overrides."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fastssl import methods
from fastssl.models.utils import NORM_LAYERS, get_weight_decay_parameters
from fastssl.train.optim import build_optimizer, merge_optimizer, param_groups, scaled_lr
from fastssl.utils.lars import LARS
from fastssl.utils.scheduler import CosineWarmupScheduler
from tests.train._tiny import TinyMethod


@pytest.mark.parametrize(
    ("base", "batch", "ref", "scaling", "expected"),
    [
        (0.3, 4096, 256, "linear", 0.3 * 16),
        (0.3, 128, 256, "linear", 0.15),
        (0.075, 4096, 1, "sqrt", 0.075 * 64),  # SimCLR's square-root rule
        (1e-3, 1024, 256, "sqrt", 2e-3),
        (0.05, 512, 256, "none", 0.05),
    ],
)
def test_scaled_lr(base: float, batch: int, ref: int, scaling: str, expected: float) -> None:
    assert scaled_lr(base, batch, ref, scaling) == pytest.approx(expected)


def test_scaled_lr_errors() -> None:
    with pytest.raises(ValueError, match="lr_scaling='cube' is unknown: choose one of linear"):
        scaled_lr(0.1, 256, 256, "cube")
    with pytest.raises(ValueError, match="batch_size=0"):
        scaled_lr(0.1, 0, 256)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)  # weight: decay, bias: none
        self.bn = nn.BatchNorm2d(4)  # none
        self.ln = nn.LayerNorm(4)  # none
        self.fc = nn.Linear(4, 2, bias=False)  # decay
        self.frozen = nn.Linear(2, 2)  # excluded (no grad)
        self.frozen.requires_grad_(False)


def test_param_groups_exclude_norms_and_biases() -> None:
    net = _Net()
    groups = param_groups([net, net.fc], weight_decay=0.05)  # fc listed twice: once only
    by_name = {g["name"]: g for g in groups}
    assert by_name["decay"]["weight_decay"] == 0.05
    assert by_name["no_decay"]["weight_decay"] == 0.0
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    assert ids(by_name["decay"]["params"]) == ids([net.conv.weight, net.fc.weight])
    assert ids(by_name["no_decay"]["params"]) == ids(
        [net.conv.bias, net.bn.weight, net.bn.bias, net.ln.weight, net.ln.bias]
    )
    everything = param_groups([net], weight_decay=0.05, exclude_norm_and_bias=False)
    assert len(everything) == 1 and len(everything[0]["params"]) == 7


@pytest.mark.parametrize(
    ("name", "cls"), [("sgd", torch.optim.SGD), ("lars", LARS), ("adamw", torch.optim.AdamW)]
)
def test_build_optimizer(name: str, cls: type) -> None:
    net = _Net()
    defaults = merge_optimizer(TinyMethod.optimizer_defaults, {"name": name, "lr": None})
    optimizer = build_optimizer(param_groups([net], 0.1), defaults, lr=0.5)
    assert isinstance(optimizer, cls)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert all(g["lr"] == 0.5 for g in optimizer.param_groups)


def test_build_optimizer_passes_only_accepted_extras() -> None:
    defaults = merge_optimizer(
        TinyMethod.optimizer_defaults,
        {"name": "lars", "extra": {"trust_coefficient": 0.02, "final_lr": 0.001}},
    )
    optimizer = build_optimizer(param_groups([_Net()], 0.1), defaults, lr=0.5)
    assert optimizer.param_groups[0]["trust_coefficient"] == 0.02
    assert "final_lr" not in optimizer.param_groups[0]


@pytest.mark.parametrize(("lr", "lr_biases"), [(0.5, 0.012), (4.0, 0.0048)])
def test_lr_biases_scales_like_lr_and_survives_the_schedule(lr: float, lr_biases: float) -> None:
    defaults = merge_optimizer(
        TinyMethod.optimizer_defaults,
        {"name": "lars", "lr": 0.2, "extra": {"lr_biases": lr_biases}},
    )  # lr 0.2 at the reference batch; the run's scaled peak is ``lr``
    optimizer = build_optimizer(param_groups([_Net()], 0.1), defaults, lr=lr)
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert by_name["decay"]["lr"] == lr
    assert by_name["no_decay"]["lr"] == pytest.approx(lr * lr_biases / 0.2)
    scheduler = CosineWarmupScheduler(optimizer, warmup_epochs=2, max_epochs=10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert by_name["no_decay"]["lr"] / by_name["decay"]["lr"] == pytest.approx(lr_biases / 0.2)


def test_lr_biases_needs_the_norm_and_bias_group() -> None:
    defaults = merge_optimizer(TinyMethod.optimizer_defaults, {"extra": {"lr_biases": 0.01}})
    groups = param_groups([_Net()], 0.1, exclude_norm_and_bias=False)
    with pytest.raises(ValueError, match=r"lr_biases .*exclude_norm_and_bias=true"):
        build_optimizer(groups, defaults, lr=0.5)
    unset = merge_optimizer(TinyMethod.optimizer_defaults, {"extra": {"lr_biases": None}})
    assert all(g["lr"] == 0.5 for g in build_optimizer(groups, unset, lr=0.5).param_groups)


def test_merge_optimizer_keeps_method_defaults_for_none() -> None:
    merged = merge_optimizer(
        TinyMethod.optimizer_defaults, {"lr": 0.7, "weight_decay": None, "betas": [0.8, 0.9]}
    )
    assert merged.lr == 0.7 and merged.betas == (0.8, 0.9)
    assert merged.weight_decay == TinyMethod.optimizer_defaults.weight_decay


@pytest.mark.parametrize(
    "layer",
    [
        nn.BatchNorm2d(3),
        nn.LayerNorm(3),
        nn.GroupNorm(1, 3),
        nn.CrossMapLRN2d(3),
        nn.SyncBatchNorm(3),
    ],
)
def test_one_norm_rule_for_the_trainer_and_get_weight_decay_parameters(layer: nn.Module) -> None:
    # Both read NORM_LAYERS: a norm layer's weight (not a bias, maybe not 1-D) is never
    # decayed by either.
    model = nn.Sequential(nn.Linear(3, 3), layer)
    _, lightly_style = get_weight_decay_parameters([model])
    trainer_no_decay = param_groups([model], 1e-4)[-1]["params"]
    norm_params = {id(p) for p in layer.parameters()}
    assert isinstance(layer, NORM_LAYERS)
    assert norm_params <= {id(p) for p in lightly_style}
    assert norm_params <= {id(p) for p in trainer_no_decay}


def test_sqrt_scaling_lr_applies_when_lr_is_unset() -> None:
    simclr = methods.get("simclr").optimizer_defaults
    assert merge_optimizer(simclr, {}).lr == 0.3  # linear scaling: the paper's 0.3 x B/256
    sqrt = merge_optimizer(simclr, {"lr_scaling": "sqrt"})
    assert scaled_lr(sqrt.lr, 4096, sqrt.reference_batch_size, "sqrt") == pytest.approx(
        0.075 * math.sqrt(4096)
    )
    assert merge_optimizer(simclr, {"lr_scaling": "sqrt", "lr": 0.5}).lr == 0.5


@pytest.mark.parametrize("name", ["sgd", "lars", "adamw"])
def test_unknown_extra_is_an_error_naming_it(name: str) -> None:
    defaults = merge_optimizer(
        TinyMethod.optimizer_defaults, {"name": name, "extra": {"wieght_decay_end": 0.4}}
    )
    with pytest.raises(ValueError, match=r"optimizer.extra.wieght_decay_end is neither an "):
        build_optimizer(param_groups([_Net()], 0.1), defaults, lr=0.5)
    unset = merge_optimizer(TinyMethod.optimizer_defaults, {"extra": {"wieght_decay_end": None}})
    build_optimizer(param_groups([_Net()], 0.1), unset, lr=0.5)  # null: unset, allowed


@pytest.mark.parametrize("batch_size", [256, 2048])
def test_lars_lr_biases_group_is_plain_sgd_and_the_weights_are_adapted(batch_size: int) -> None:
    # Barlow Twins (section 4): biases and norms at lr_biases x B/256, "excluded from LARS
    # adaptation and weight decay"; the weights at lr x B/256 with weight decay and LARS.
    torch.manual_seed(0)
    net = _Net()
    defaults = methods.get("barlowtwins").optimizer_defaults
    lr = scaled_lr(defaults.lr, batch_size, defaults.reference_batch_size)
    optimizer = build_optimizer(param_groups([net], defaults.weight_decay), defaults, lr)
    assert isinstance(optimizer, LARS)
    loss = net.fc(net.ln(net.bn(net.conv(torch.randn(2, 3, 6, 6))).mean(dim=(2, 3)))).sum()
    loss.backward()
    params = [net.conv.weight, net.conv.bias, net.bn.weight, net.ln.bias, net.fc.weight]
    before = [p.detach().clone() for p in params]
    grads = [p.grad.detach().clone() for p in params]  # type: ignore[union-attr]
    optimizer.step()
    factor = batch_size / 256
    for param, old, grad in zip(params[1:4], before[1:4], grads[1:4], strict=True):
        torch.testing.assert_close(old - param.detach(), 0.0048 * factor * grad)
    for param, old, grad in ((params[0], before[0], grads[0]), (params[4], before[4], grads[4])):
        d = grad + 1.5e-6 * old
        trust = 0.001 * old.norm() / (grad.norm() + 1.5e-6 * old.norm() + 1e-8)
        torch.testing.assert_close(old - param.detach(), 0.2 * factor * trust * d)
