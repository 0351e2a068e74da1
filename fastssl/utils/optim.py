"""Optimizer helpers (LightlySSL's ``lightly.utils.optim``).

Example:
    >>> import torch
    >>> head, body = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> optimizer = torch.optim.SGD(
    ...     [{"name": "body", "params": body.parameters()},
    ...      {"name": "head", "params": head.parameters(), "weight_decay": 0.5}],
    ...     lr=0.1, weight_decay=0.2,
    ... )
    >>> update_param_groups(optimizer, {"weight_decay": 0.3}, [{"name": "head", "lr": 1.0}])
    >>> [(g["name"], g["lr"], g["weight_decay"]) for g in optimizer.param_groups]
    [('body', 0.1, 0.3), ('head', 1.0, 0.3)]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch.optim import Optimizer


def update_param_groups(
    optimizer: Optimizer,
    default_update: dict[str, Any] | None = None,
    updates: Iterable[dict[str, Any]] | None = None,
) -> None:
    """Sets values of the optimizer's param groups, e.g. to follow a schedule.

    Args:
        optimizer: A PyTorch optimizer.
        default_update: Values set in every param group that already has the key; a
            key a group lacks is not added to it.
        updates: Per-group values. Each dict has a ``"name"`` key selecting the param
            group(s) of that name (the ``"name"`` given when the optimizer was built);
            all its other values are set in those groups and take precedence over
            ``default_update``.

    Raises:
        ValueError: If an update has no ``"name"``, no param group has that name, or a
            key of the update is not in the named group. All updates are checked before
            any value is set, so a failing call leaves the optimizer unchanged.
    """
    groups = optimizer.param_groups
    updates = list(updates or [])
    targets: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for update in updates:
        if "name" not in update:
            raise ValueError(f"every update needs a 'name' key, got {update!r}")
        name = update["name"]
        named = [group for group in groups if group.get("name") == name]
        if not named:
            raise ValueError(f"No param group with name '{name}' in optimizer.")
        for group in named:
            missing = [key for key in update if key not in group]
            if missing:
                raise ValueError(f"Key '{missing[0]}' not found in param group with name '{name}'.")
        targets.append((update, named))

    for key, value in (default_update or {}).items():
        for group in groups:
            if key in group:
                group[key] = value
    for update, named in targets:
        for group in named:
            group.update(update)
