"""Helpers that every ready method builds on: argument checks, views and step schedules.

Every method validates its hyper-parameters before building anything, with a message that
names the argument (``check_*``, in one place so that the messages agree); unpacks or
batches its views (:func:`two_views`, :func:`forward_views`); reads its position in the
run from a :class:`~fastssl.methods.base.StepInfo` (:data:`FIRST_STEP`,
:func:`scheduled_step`); and, with a momentum encoder, moves it with :class:`EMAMethod`.
Methods import from here, from ``base`` and, for vision transformers, from ``_vit``; never
from one another.

Private module: the public entry points are the method classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from fastssl.methods.base import Method, StepInfo
from fastssl.models.utils import update_momentum
from fastssl.utils.scheduler import cosine_schedule

#: Default ``info`` of ``training_step`` (StepInfo is frozen, so one shared instance is safe).
FIRST_STEP = StepInfo()


def check_count(name: str, value: int, minimum: int) -> None:
    """Raises a ValueError naming the argument if ``value`` is not an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"'{name}' must be an integer >= {minimum}, got {name}={value!r}.")


def check_dims(**dims: int) -> None:
    """Raises a ValueError naming the first head dimension that is not an integer >= 1."""
    for name, value in dims.items():
        check_count(name, value, 1)


def check_momentum(start: float, end: float) -> None:
    """Raises a ValueError naming the argument if an EMA momentum is outside [0, 1]."""
    for name, value in (("momentum_start", start), ("momentum_end", end)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"'{name}' must be in [0, 1], got {name}={value!r}.")


def check_mask_ratio(mask_ratio: float) -> None:
    """Raises a ValueError naming ``mask_ratio`` unless it is in (0, 1)."""
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"'mask_ratio' must be in (0, 1), got mask_ratio={mask_ratio!r}.")


def two_views(method: str, views: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """The two views of a two-view method, or a ValueError naming the method.

    Extra views are an error rather than silently ignored: they would be a wrong transform.
    """
    if len(views) != 2:
        raise ValueError(f"{method} needs exactly 2 views per batch, got {len(views)}.")
    return views[0], views[1]


def forward_views(fn: Callable[[Tensor], Tensor], views: Sequence[Tensor]) -> list[Tensor]:
    """Applies ``fn`` to every view, one call per run of consecutive same-size views.

    Concatenating same-size crops makes one large forward instead of many small ones (as the
    DINO and SwaV reference code does); batch norm then sees the views of a run together.

    Returns:
        One output per view, in order.
    """
    groups: list[list[Tensor]] = []
    for view in views:
        if groups and groups[-1][0].shape == view.shape:
            groups[-1].append(view)
        else:
            groups.append([view])
    outputs: list[Tensor] = []
    for group in groups:
        outputs.extend(fn(torch.cat(group)).chunk(len(group)))
    return outputs


def scheduled_step(info: StepInfo) -> tuple[int, int]:
    """``(step, max_steps)`` with the step clamped to the last one (schedules end there)."""
    max_steps = max(int(info.max_steps), 1)
    return min(max(int(info.step), 0), max_steps - 1), max_steps


def embed(backbone: nn.Module, head: nn.Module, images: Tensor) -> Tensor:
    """``head(backbone(images))`` with the backbone features flattened to (B, D)."""
    out: Tensor = head(backbone(images).flatten(start_dim=1))
    return out


class EMAMethod(Method):
    """A method with EMA copies of some of its modules (momentum, target or teacher encoder).

    Subclasses set ``momentum_start`` and ``momentum_end`` and list in :attr:`ema_pairs`
    which attribute is the EMA copy of which; :meth:`update_ema` moves them all.
    """

    #: ``(online attribute, EMA copy attribute)`` of every module with an EMA copy.
    ema_pairs: ClassVar[tuple[tuple[str, str], ...]] = ()
    momentum_start: float
    momentum_end: float

    def momentum(self, info: StepInfo) -> float:
        """EMA momentum of the step: cosine from ``momentum_start`` to ``momentum_end``."""
        step, max_steps = scheduled_step(info)
        return cosine_schedule(step, max_steps, self.momentum_start, self.momentum_end)

    def update_ema(self, info: StepInfo) -> None:
        """``ema = m * ema + (1 - m) * online`` for every pair, ``m = self.momentum(info)``."""
        m = self.momentum(info)
        for online, ema in self.ema_pairs:
            update_momentum(getattr(self, online), getattr(self, ema), m)


class TwoViewMethod(Method):
    """A method whose loss compares the projections of two views of every image.

    Subclasses set ``projection_head`` and ``criterion``; :meth:`training_step` returns
    ``criterion(project(view0), project(view1))``.
    """

    #: Forward both views as one batch (the head's batch norm then normalises over 2B, as
    #: SimCLR's reference code does) instead of one view after the other.
    joint_forward: ClassVar[bool] = False
    projection_head: nn.Module
    criterion: nn.Module

    def project(self, images: Tensor) -> Tensor:
        """Projections (B, output_dim) of images (B, 3, H, W)."""
        out: Tensor = self.projection_head(self(images))
        return out

    def projections(self, views: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """The projections of the two views (a ValueError for any other number of views)."""
        x0, x1 = two_views(type(self).__name__, views)
        if self.joint_forward:
            z0, z1 = forward_views(self.project, [x0, x1])
            return z0, z1
        return self.project(x0), self.project(x1)

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """The criterion of the two views' projections."""
        loss: Tensor = self.criterion(*self.projections(views))
        return loss
