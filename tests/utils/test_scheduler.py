from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import pytest
import torch
from lightly.utils import scheduler as lightly_scheduler

from fastssl.utils.scheduler import (
    CosineWarmupScheduler,
    cosine_schedule,
    cosine_warmup_schedule,
    linear_warmup_schedule,
)

VALUES = [(1.0, 0.0), (0.996, 1.0), (-2.0, 5.0)]


def _quiet(fn: Any, *args: Any, **kwargs: Any) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(fn(*args, **kwargs))


def _closed_cosine(
    step: int, max_steps: int, start: float, end: float, period: int | None
) -> float:
    # The half-cosine from the SGDR paper, written from step 0 to max_steps - 1.
    if period is not None:
        return start + (end - start) * (1 - math.cos(2 * math.pi * step / period)) / 2
    if max_steps <= 1 or step >= max_steps - 1:
        return end
    return start + (end - start) * (1 - math.cos(math.pi * step / (max_steps - 1))) / 2


@pytest.mark.parametrize("values", VALUES)
@pytest.mark.parametrize("period", [None, 1, 3, 7])
@pytest.mark.parametrize("max_steps", [0, 1, 2, 5, 10, 101])
def test_cosine_schedule_matches_lightly_and_formula(
    max_steps: int, period: int | None, values: tuple[float, float]
) -> None:
    start, end = values
    for step in range(max_steps + 3):
        ours = _quiet(cosine_schedule, step, max_steps, start, end, period=period)
        theirs = _quiet(lightly_scheduler.cosine_schedule, step, max_steps, start, end, period)
        assert isinstance(cosine_schedule(0, max_steps + 1, start, end, period), float)
        assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-12), step
        assert ours == pytest.approx(_closed_cosine(step, max_steps, start, end, period), abs=1e-12)


def test_cosine_schedule_endpoints_and_midpoint() -> None:
    assert cosine_schedule(0, 11, 1.0, 0.0) == 1.0
    assert cosine_schedule(5, 11, 1.0, 0.0) == pytest.approx(0.5)
    assert cosine_schedule(10, 11, 1.0, 0.0) == 0.0


def test_cosine_schedule_warns_past_the_end() -> None:
    with pytest.warns(RuntimeWarning, match="exceeds max_steps"):
        assert cosine_schedule(12, 10, 1.0, 0.0) == 0.0


WARMUP_CASES = [
    (max_steps, warmup, period)
    for max_steps, warmup, period in itertools.product([1, 2, 6, 20], [0, 1, 3, 6], [None, 4])
    if warmup <= max_steps
]


@pytest.mark.parametrize(("max_steps", "warmup_steps", "period"), WARMUP_CASES)
@pytest.mark.parametrize(("warmup_start", "warmup_end"), [(0.0, None), (0.1, 2.0)])
def test_cosine_warmup_schedule_matches_lightly_and_formula(
    max_steps: int,
    warmup_steps: int,
    period: int | None,
    warmup_start: float,
    warmup_end: float | None,
) -> None:
    start, end = 1.5, 0.01
    for step in range(max_steps + 2):
        kwargs = {
            "step": step,
            "max_steps": max_steps,
            "start_value": start,
            "end_value": end,
            "warmup_steps": warmup_steps,
            "warmup_start_value": warmup_start,
            "warmup_end_value": warmup_end,
            "period": period,
        }
        ours = _quiet(cosine_warmup_schedule, **kwargs)
        assert ours == pytest.approx(_quiet(lightly_scheduler.cosine_warmup_schedule, **kwargs))
        if step < warmup_steps:
            ramp_end = start if warmup_end is None else warmup_end
            expected = warmup_start + (ramp_end - warmup_start) * (step + 1) / warmup_steps
        else:
            expected = _closed_cosine(
                step - warmup_steps, max_steps - warmup_steps, start, end, period
            )
        assert ours == pytest.approx(expected, abs=1e-12), step


@pytest.mark.parametrize(
    ("warmup_steps", "start", "end"), [(0, 0.0, 1.0), (1, 0.5, 0.5), (4, 0.04, 0.07), (9, 0.0, 3.0)]
)
def test_linear_warmup_schedule_matches_lightly_and_formula(
    warmup_steps: int, start: float, end: float
) -> None:
    for step in range(warmup_steps + 3):
        ours = linear_warmup_schedule(step, warmup_steps, start, end)
        theirs = lightly_scheduler.linear_warmup_schedule(step, warmup_steps, start, end)
        assert ours == pytest.approx(theirs, abs=1e-15)
        expected = start + (end - start) * min(step, warmup_steps) / max(warmup_steps, 1)
        assert ours == pytest.approx(end if warmup_steps == 0 else expected, abs=1e-12)


def test_linear_warmup_schedule_may_decrease() -> None:
    # lightly rejects start_value > end_value; a ramp down is a valid schedule here.
    assert linear_warmup_schedule(1, 4, 1.0, 0.0) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("fn", "kwargs", "match"),
    [
        (cosine_schedule, {"step": -1, "max_steps": 5}, r"step must be >= 0, got -1"),
        (cosine_schedule, {"step": 0, "max_steps": -2}, r"max_steps must be >= 0, got -2"),
        (
            cosine_schedule,
            {"step": 0, "max_steps": 5, "period": 0},
            r"period must be a positive number of steps or None, got 0",
        ),
        (
            cosine_warmup_schedule,
            {"step": 0, "max_steps": 5, "warmup_steps": -1, "warmup_start_value": 0.0},
            r"warmup_steps must be >= 0, got -1",
        ),
        (
            cosine_warmup_schedule,
            {"step": 0, "max_steps": 5, "warmup_steps": 6, "warmup_start_value": 0.0},
            r"warmup_steps must be <= max_steps, got warmup_steps=6 and max_steps=5",
        ),
        (
            cosine_warmup_schedule,
            {"step": -1, "max_steps": 5, "warmup_steps": 2, "warmup_start_value": 0.0},
            r"step must be >= 0, got -1",
        ),
        (
            cosine_warmup_schedule,
            {"step": 0, "max_steps": 5, "warmup_steps": 1, "warmup_start_value": 0.0, "period": -3},
            r"period must be a positive number of steps or None, got -3",
        ),
    ],
)
def test_schedules_reject_bad_arguments(fn: Any, kwargs: dict[str, Any], match: str) -> None:
    kwargs = {"start_value": 1.0, "end_value": 0.0} | kwargs
    with pytest.raises(ValueError, match=match):
        fn(**kwargs)


@pytest.mark.parametrize(
    ("step", "warmup_steps", "match"),
    [(-1, 3, r"step must be >= 0, got -1"), (0, -2, r"warmup_steps must be >= 0, got -2")],
)
def test_linear_warmup_rejects_bad_arguments(step: int, warmup_steps: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        linear_warmup_schedule(step, warmup_steps, 0.0, 1.0)


def _optimizer() -> torch.optim.Optimizer:
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    return torch.optim.SGD([{"params": params[:1], "lr": 0.1}, {"params": params[1:], "lr": 2.0}])


def _lr_trajectory(scheduler_cls: Any, kwargs: dict[str, Any], epochs: int) -> list[list[float]]:
    optimizer = _optimizer()
    scheduler = scheduler_cls(optimizer, **kwargs)
    lrs = []
    for _ in range(epochs):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            scheduler.step()
    return lrs


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warmup_epochs": 0, "max_epochs": 10},
        {"warmup_epochs": 3, "max_epochs": 12},
        {"warmup_epochs": 2, "max_epochs": 9, "start_value": 0.5, "end_value": 0.0, "period": 4},
        {
            "warmup_epochs": 4,
            "max_epochs": 8,
            "warmup_start_value": 0.1,
            "warmup_end_value": 2.0,
            "start_value": 1.0,
        },
    ],
)
def test_cosine_warmup_scheduler_matches_lightly(kwargs: dict[str, Any]) -> None:
    epochs = kwargs["max_epochs"] + 2
    ours = _lr_trajectory(CosineWarmupScheduler, kwargs, epochs)
    theirs = _lr_trajectory(lightly_scheduler.CosineWarmupScheduler, kwargs, epochs)
    assert len(ours) == len(theirs)
    for mine, other in zip(ours, theirs, strict=True):
        assert mine == pytest.approx(other, abs=1e-12)
    for epoch, (lr_a, lr_b) in enumerate(ours):
        factor = _quiet(
            cosine_warmup_schedule,
            epoch,
            kwargs["max_epochs"],
            kwargs.get("start_value", 1.0),
            kwargs.get("end_value", 0.001),
            kwargs["warmup_epochs"],
            kwargs.get("warmup_start_value", 0.0),
            kwargs.get("warmup_end_value"),
            kwargs.get("period"),
        )
        assert (lr_a, lr_b) == pytest.approx((0.1 * factor, 2.0 * factor), abs=1e-12)


def test_cosine_warmup_scheduler_state_dict_round_trip() -> None:
    kwargs = {"warmup_epochs": 2, "max_epochs": 10}
    optimizer = _optimizer()
    scheduler = CosineWarmupScheduler(optimizer, **kwargs)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    resumed_optimizer = _optimizer()
    resumed = CosineWarmupScheduler(resumed_optimizer, **kwargs)
    resumed.load_state_dict(state)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
        resumed_optimizer.step()
        resumed.step()
        assert resumed.get_last_lr() == pytest.approx(scheduler.get_last_lr(), abs=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"warmup_epochs": -1, "max_epochs": 5}, r"warmup_epochs must be >= 0, got -1"),
        (
            {"warmup_epochs": 7, "max_epochs": 5},
            r"warmup_epochs must be <= max_epochs, got warmup_epochs=7 and max_epochs=5",
        ),
        ({"warmup_epochs": 1, "max_epochs": 5, "period": 0}, r"period must be a positive"),
    ],
)
def test_cosine_warmup_scheduler_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CosineWarmupScheduler(_optimizer(), **kwargs)
