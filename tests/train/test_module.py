from __future__ import annotations

import math
import warnings

import pytest
import torch

from fastssl import methods
from fastssl.train.module import PretrainModule
from tests.train._tiny import TINY, TinyMethod


class _FakeLoader:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def _reference_lr(step: int, peak: float, warmup: int, total: int, end: float) -> float:
    """Linear warm-up to the peak (reached at the last warm-up step), then half a cosine."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t, span = step - warmup, total - warmup
    if t >= span - 1:
        return peak * end
    return peak * (end + (1 - end) * (1 + math.cos(math.pi * t / (span - 1))) / 2)


@pytest.mark.parametrize(
    ("batch", "schedule", "max_epochs", "max_steps", "warmup", "total"),
    [
        (16, {"warmup_epochs": 2}, 6, -1, 10, 30),  # 5 steps/epoch; warm-up in epochs
        (4, {"warmup_steps": 3, "end_factor": 0.01}, 100, 12, 3, 12),  # max_steps wins
        (8, {}, 2, -1, 5, 10),  # the method's default warm-up (1 epoch)
    ],
)
def test_warmup_cosine_per_step(
    batch: int, schedule: dict, max_epochs: int, max_steps: int, warmup: int, total: int
) -> None:
    module = PretrainModule(
        TINY, {}, schedule=schedule, batch_size=batch, max_epochs=max_epochs, max_steps=max_steps
    )
    module.loader = _FakeLoader(5)  # type: ignore[assignment]
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    assert module.schedule_steps == total
    peak = 0.2 * batch / 8  # TinyMethod: lr 0.2 at reference batch 8, linear scaling
    assert module.peak_lr() == pytest.approx(peak)
    end = schedule.get("end_factor", 0.0)
    for step in range(total):
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(_reference_lr(step, peak, warmup, total, end))
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize(("warmup_epochs", "warns"), [(10, True), (1, False)])
def test_warmup_covering_the_whole_run_warns(warmup_epochs: int, warns: bool) -> None:
    module = PretrainModule(
        TINY, {}, schedule={"warmup_epochs": warmup_epochs}, batch_size=8, max_epochs=10
    )
    module.loader = _FakeLoader(5)  # type: ignore[assignment]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module.configure_optimizers()
    messages = [str(w.message) for w in caught if "warm-up" in str(w.message)]
    assert bool(messages) == warns
    if warns:
        assert "covers the whole run of 50 steps" in messages[0]
        assert "schedule.warmup_epochs=1" in messages[0]


def test_step_info_reaches_the_method() -> None:
    seen = []

    class Spy(TinyMethod):
        def before_optimizer_step(self, info):  # type: ignore[no-untyped-def]
            seen.append(info)

    module = PretrainModule(TINY, {})
    module.method = Spy()
    module.schedule_steps, module.schedule_epochs = 40, 4
    module.on_before_optimizer_step(torch.optim.SGD(module.parameters(), lr=0.1))
    assert seen[0].max_steps == 40 and seen[0].max_epochs == 4 and seen[0].step == 0


def _module(method: str = TINY, kwargs: dict | None = None, **options: object) -> PretrainModule:
    """A module over 5 fake batches per epoch, its optimizer configured."""
    module = PretrainModule(method, kwargs or {}, batch_size=8, max_epochs=2, **options)  # type: ignore[arg-type]
    module.loader = _FakeLoader(5)  # type: ignore[assignment]
    return module


@pytest.mark.parametrize(("start", "end"), [(0.04, 0.4), (0.1, 0.01)])
def test_weight_decay_end_follows_a_cosine_over_the_run(start: float, end: float) -> None:
    module = _module(optimizer={"weight_decay": start, "extra": {"weight_decay_end": end}})
    optimizer = module.configure_optimizers()["optimizer"]
    total = module.schedule_steps
    assert total == 10
    for step in range(total + 2):  # steps past the end stay at the end value
        module.apply_group_schedules(optimizer, step)
        t = min(step, total - 1) / (total - 1)
        expected = end - (end - start) * (1 + math.cos(math.pi * t)) / 2  # DINO's cosine
        by_name = {g["name"]: g for g in optimizer.param_groups}
        assert by_name["decay"]["weight_decay"] == pytest.approx(expected)
        assert by_name["no_decay"]["weight_decay"] == 0.0
    assert by_name["decay"]["weight_decay"] == pytest.approx(end)


def test_weight_decay_stays_constant_without_weight_decay_end() -> None:
    module = _module(optimizer={"weight_decay": 0.05})
    optimizer = module.configure_optimizers()["optimizer"]
    module.apply_group_schedules(optimizer, 7)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]


@pytest.mark.parametrize(
    ("method", "key", "value"),
    [
        ("dino", "weight_decay_end", 0.4),
        ("dino", "final_lr", 1e-6),
        ("dino", "clip_grad_norm", 3.0),
        ("msn", "weight_decay_end", 0.4),
        ("msn", "start_lr", 2e-4),
        ("simsiam", "fix_predictor_lr", True),
    ],
)
def test_paper_extras_are_engine_settings(method: str, key: str, value: object) -> None:
    from fastssl.train.optim import ENGINE_EXTRAS

    extra = methods.get(method).optimizer_defaults.extra
    assert extra[key] == value and key in ENGINE_EXTRAS


def test_fix_predictor_lr_keeps_the_predictor_at_the_peak() -> None:
    kwargs = {"backbone": "resnet18", "input_size": 32, "proj_hidden_dim": 8}
    kwargs |= {"pred_hidden_dim": 4, "output_dim": 8}
    module = _module("simsiam", kwargs, schedule={"warmup_epochs": 1})
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    predictor = {id(p) for p in module.method.prediction_head.parameters()}
    fixed = [g for g in optimizer.param_groups if g.get("fixed_lr")]
    assert {g["name"] for g in fixed} == {"decay_fixed_lr", "no_decay_fixed_lr"}
    assert {id(p) for g in fixed for p in g["params"]} == predictor
    others = [g for g in optimizer.param_groups if not g.get("fixed_lr")]
    assert not predictor & {id(p) for g in others for p in g["params"]}
    assert all(g["weight_decay"] == 0.0 for g in fixed + others if "no_decay" in g["name"])
    peak = module.peak_lr()
    for step in range(module.schedule_steps):
        module.apply_group_schedules(optimizer, step)  # what Lightning calls before step()
        assert all(g["lr"] == pytest.approx(peak) for g in fixed)
        expected = peak * scheduler.scale_lr(step)
        assert all(g["lr"] == pytest.approx(expected) for g in others)
        optimizer.step()
        scheduler.step()
    assert others[0]["lr"] < peak / 10  # the rest decayed


def test_fix_predictor_lr_needs_a_predictor() -> None:
    module = _module(optimizer={"extra": {"fix_predictor_lr": True}})
    with pytest.raises(ValueError, match=r"has no predictor: set optimizer.extra.fix_predictor_lr"):
        module.configure_optimizers()


@pytest.mark.parametrize(
    ("schedule", "extra", "end", "start"),
    [
        ({}, {}, 0.0, 0.0),
        ({}, {"final_lr": 0.02, "start_lr": 0.05}, 0.1, 0.25),  # TinyMethod lr 0.2
        ({"end_factor": 0.3, "warmup_start_factor": 0.5}, {"final_lr": 0.02}, 0.3, 0.5),
    ],
)
def test_final_and_start_lr_set_the_schedule_unless_given(
    schedule: dict, extra: dict, end: float, start: float
) -> None:
    module = _module(schedule=schedule, optimizer={"extra": extra})
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert scheduler.end_value == pytest.approx(end)
    assert scheduler.warmup_start_value == pytest.approx(start)
