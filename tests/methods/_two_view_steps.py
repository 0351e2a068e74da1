"""Shared checks of the two-view methods (SimCLR, MoCo, BYOL, SimSiam, NNCLR, Barlow Twins,
VICReg, TiCo, DCL, DenseCL)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from fastssl.methods.base import Method, StepInfo
from tests.methods._method_steps import (
    assert_ema,
    changed,
    default_views,
    optimizer_step,
    params_of,
)


def tiny_cnn(maps: bool = False) -> nn.Module:
    """A one-convolution backbone, (B, 3, H, W) -> (B, 8) features (or (B, 8, H/2, W/2))."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
    ]
    if not maps:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


def two_views(batch_size: int = 6, size: int = 16, seed: int = 0) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch_size, 3, size, size, generator=generator) for _ in range(2)]


def parameter_ids(modules: Sequence[nn.Module]) -> set[int]:
    return {id(p) for module in modules for p in module.parameters()}


def check_default_step(
    model: Method,
    ema_pairs: Sequence[tuple[nn.Module, nn.Module, str]] = (),
    m: float | None = None,
    info: StepInfo | None = None,
) -> None:
    """One SGD step on the default views: finite loss, every trainable module moves, each
    EMA copy (online module, EMA module, online parameter-name prefix) moves exactly by
    ``m``, gets no gradient and is not trainable."""
    views = default_views(model, batch_size=4)
    size = model.input_size
    assert len(views) == 2 and all(v.shape == (4, 3, size, size) for v in views)
    ema_before = [params_of(ema) for _, ema, _ in ema_pairs]
    loss, before = optimizer_step(model, views, info or StepInfo(step=0, max_steps=10))
    assert loss.ndim == 0 and torch.isfinite(loss)
    trainable = parameter_ids(model.trainable_modules())
    for name, module in model.named_children():
        if any(id(p) in trainable and p.requires_grad for p in module.parameters()):
            assert changed(model, before, f"{name}."), f"{name} did not move"
    assert trainable
    for (online, ema, prefix), teacher_before in zip(ema_pairs, ema_before, strict=True):
        assert m is not None
        online_before = [before[f"{prefix}.{n}"] for n, _ in online.named_parameters()]
        assert_ema(params_of(ema), teacher_before, online_before, m)
        assert all(p.grad is None and not p.requires_grad for p in ema.parameters())
        assert not parameter_ids([ema]) & trainable


def check_deterministic(make: Callable[[], Method], steps: int = 2) -> None:
    """Same seed, same losses over ``steps`` training steps (memory banks included)."""
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = make()
        losses = []
        for step in range(steps):
            info = StepInfo(step=step, max_steps=steps)
            loss, _ = optimizer_step(model, two_views(seed=step), info)
            losses.append(loss)
        runs.append(torch.stack(losses))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0][0], runs[0][1])


def check_ema_moves(
    model: Method,
    pairs: Sequence[tuple[nn.Module, nn.Module]],
    info: StepInfo,
    m: float,
    views: list[Tensor] | None = None,
) -> None:
    """``training_step(info)`` moves every EMA module by ``m`` before anything else."""
    online = [p for pair in pairs for p in params_of(pair[0])]
    ema = [p for pair in pairs for p in params_of(pair[1])]
    model.training_step(views if views is not None else two_views(), info)
    after = [p for pair in pairs for p in params_of(pair[1])]
    assert_ema(after, ema, online, m)
