from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.utils.optim import update_param_groups as lightly_update_param_groups

from fastssl.utils.optim import update_param_groups


def _optimizer() -> torch.optim.Optimizer:
    model, no_decay, head = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    return torch.optim.SGD(
        [
            {"name": "model", "params": model.parameters()},
            {"name": "model_no_weight_decay", "params": no_decay.parameters(), "weight_decay": 0.0},
            {"name": "head", "params": head.parameters(), "weight_decay": 0.5},
            {"params": torch.nn.Linear(1, 1).parameters()},  # unnamed group
        ],
        lr=0.1,
        weight_decay=0.2,
    )


def _values(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    return [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]


@pytest.mark.parametrize(
    ("default_update", "updates"),
    [
        (None, None),
        ({"weight_decay": 0.3}, None),
        ({"weight_decay": 0.3, "not_a_key": 1}, None),
        (None, [{"name": "head", "lr": 0.7}]),
        (
            {"weight_decay": 0.3, "lr": 0.05},
            [
                {"name": "model_no_weight_decay", "weight_decay": 0.0},
                {"name": "head", "weight_decay": 0.6},
            ],
        ),
    ],
)
def test_matches_lightly(default_update: dict | None, updates: list | None) -> None:
    ours, theirs = _optimizer(), _optimizer()
    update_param_groups(ours, default_update=default_update, updates=updates)
    lightly_update_param_groups(theirs, default_update=default_update, updates=updates)
    assert _values(ours) == _values(theirs)
    assert _values(ours) != _values(_optimizer()) or (default_update, updates) == (None, None)


def test_updates_take_precedence_and_new_keys_are_not_added() -> None:
    optimizer = _optimizer()
    update_param_groups(
        optimizer, {"weight_decay": 0.3, "new_key": 1}, [{"name": "head", "weight_decay": 0.6}]
    )
    by_name = {g.get("name"): g for g in optimizer.param_groups}
    assert by_name["model"]["weight_decay"] == 0.3
    assert by_name["head"]["weight_decay"] == 0.6
    assert all("new_key" not in g for g in optimizer.param_groups)


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ([{"name": "missing", "lr": 1.0}], "No param group with name 'missing'"),
        (
            [{"name": "head", "betas": (0.9, 0.9)}],
            "Key 'betas' not found in param group with name 'head'",
        ),
        ([{"lr": 1.0}], "'name'"),
    ],
)
def test_bad_updates_raise_and_change_nothing(updates: list, message: str) -> None:
    optimizer = _optimizer()
    before = _values(optimizer)
    with pytest.raises(ValueError, match=message):
        update_param_groups(optimizer, {"lr": 9.0}, [{"name": "model", "lr": 3.0}, *updates])
    assert _values(optimizer) == before
