"""Value schedules for learning rates, momenta and temperatures (LightlySSL-compatible).

The cosine decay follows SGDR (Loshchilov & Hutter, 2017, https://arxiv.org/abs/1608.03983)
as used by SimCLR, BYOL and DINO; warmup is the linear ramp of Goyal et al. (2017,
https://arxiv.org/abs/1706.02677). All functions are pure: they map a step to a value.

Example:
    >>> cosine_schedule(step=0, max_steps=101, start_value=0.996, end_value=1.0)
    0.996
    >>> cosine_schedule(step=50, max_steps=101, start_value=0.996, end_value=1.0)
    0.998
"""

from __future__ import annotations

import math
import warnings

import torch


def _check_non_negative(name: str, value: float) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}.")


def _check_period(period: float | None) -> None:
    if period is not None and period <= 0:
        raise ValueError(f"period must be a positive number of steps or None, got {period!r}.")


def _warn_past_end(step: float, max_steps: float) -> None:
    if step > max_steps:
        warnings.warn(
            f"Current step number {step} exceeds max_steps {max_steps}.",
            category=RuntimeWarning,
            stacklevel=3,
        )


def _cosine(
    step: float, max_steps: float, start_value: float, end_value: float, period: float | None
) -> float:
    """The cosine interpolation without argument checks; see :func:`cosine_schedule`."""
    if period is not None:
        phase = 2.0 * math.pi * step / period
    elif max_steps <= 1 or step >= max_steps - 1:
        # The last step (and any later one: Lightning steps the scheduler once more after
        # the last epoch) sits exactly on end_value; max_steps <= 1 has no room to decay.
        return float(end_value)
    else:
        phase = math.pi * step / (max_steps - 1)
    # weight goes 1 -> 0 over half a cosine period: start_value -> end_value.
    weight = (1.0 + math.cos(phase)) / 2.0
    return float(end_value - (end_value - start_value) * weight)


def cosine_schedule(
    step: int,
    max_steps: int,
    start_value: float,
    end_value: float,
    period: int | None = None,
) -> float:
    """Cosine interpolation from ``start_value`` (step 0) to ``end_value`` (step max_steps - 1).

    ``value = end - (end - start) * (1 + cos(pi * step / (max_steps - 1))) / 2``. With a
    ``period`` the cosine instead oscillates with that period:
    ``value = end - (end - start) * (1 + cos(2 * pi * step / period)) / 2``.

    Args:
        step: Current step, >= 0.
        max_steps: Total number of steps, >= 0. Steps past ``max_steps - 1`` give
            ``end_value`` (and a ``RuntimeWarning`` past ``max_steps``).
        start_value: Value at step 0.
        end_value: Value at the last step.
        period: Steps of one full cosine cycle; ``None`` for a half cycle over max_steps.

    Returns:
        The scheduled value, a Python float.

    Raises:
        ValueError: If ``step`` or ``max_steps`` is negative or ``period`` is not positive.

    Example:
        >>> cosine_schedule(9, 10, start_value=1.0, end_value=0.0)
        0.0
    """
    _check_non_negative("step", step)
    _check_non_negative("max_steps", max_steps)
    _check_period(period)
    if period is None:
        _warn_past_end(step, max_steps)
    return _cosine(step, max_steps, start_value, end_value, period)


def cosine_warmup_schedule(
    step: int,
    max_steps: int,
    start_value: float,
    end_value: float,
    warmup_steps: int,
    warmup_start_value: float,
    warmup_end_value: float | None = None,
    period: int | None = None,
) -> float:
    """Linear warmup for ``warmup_steps`` steps, then :func:`cosine_schedule`.

    During warmup the value rises linearly and reaches ``warmup_end_value`` at the last
    warmup step: ``warmup_start + (warmup_end - warmup_start) * (step + 1) / warmup_steps``
    (so ``warmup_start_value`` itself, often 0, is never used: it would waste a step). The
    cosine then runs from ``start_value`` to ``end_value`` over the remaining
    ``max_steps - warmup_steps`` steps, or with ``period`` from the end of warmup on.

    Args:
        step: Current step, >= 0.
        max_steps: Total number of steps, warmup included.
        start_value: Value at the first step after warmup.
        end_value: Value at the last step.
        warmup_steps: Number of warmup steps, between 0 and ``max_steps``.
        warmup_start_value: Value the warmup ramps up from.
        warmup_end_value: Value at the end of warmup; defaults to ``start_value``.
        period: Steps of one full cosine cycle after warmup; ``None`` for a half cycle.

    Returns:
        The scheduled value, a Python float.

    Raises:
        ValueError: If ``step`` or ``warmup_steps`` is negative, ``warmup_steps`` exceeds
            ``max_steps`` or ``period`` is not positive.

    Example:
        >>> cosine_warmup_schedule(1, 12, 1.0, 0.0, warmup_steps=2, warmup_start_value=0.0)
        1.0
    """
    _check_non_negative("step", step)
    _check_non_negative("warmup_steps", warmup_steps)
    if warmup_steps > max_steps:
        raise ValueError(
            f"warmup_steps must be <= max_steps, got warmup_steps={warmup_steps!r} and "
            f"max_steps={max_steps!r}."
        )
    _check_period(period)
    _warn_past_end(step, max_steps)
    if step < warmup_steps:
        ramp_end = start_value if warmup_end_value is None else warmup_end_value
        return float(
            warmup_start_value + (ramp_end - warmup_start_value) * (step + 1) / warmup_steps
        )
    return _cosine(step - warmup_steps, max_steps - warmup_steps, start_value, end_value, period)


def linear_warmup_schedule(
    step: int,
    warmup_steps: int,
    start_value: float,
    end_value: float,
) -> float:
    """Linear ramp from ``start_value`` (step 0) to ``end_value`` (step warmup_steps on).

    ``value = start + (end - start) * step / warmup_steps`` while ``step < warmup_steps``,
    ``end_value`` afterwards. DINO uses it for the teacher temperature.

    Args:
        step: Current step, >= 0.
        warmup_steps: Length of the ramp, >= 0.
        start_value: Value at step 0.
        end_value: Value from step ``warmup_steps`` on.

    Returns:
        The scheduled value, a Python float.

    Raises:
        ValueError: If ``step`` or ``warmup_steps`` is negative.

    Example:
        >>> linear_warmup_schedule(5, warmup_steps=10, start_value=0.0, end_value=0.5)
        0.25
    """
    _check_non_negative("step", step)
    _check_non_negative("warmup_steps", warmup_steps)
    if step < warmup_steps:
        return float(start_value + (end_value - start_value) * step / warmup_steps)
    return float(end_value)


class CosineWarmupScheduler(torch.optim.lr_scheduler.LambdaLR):
    """Learning-rate scheduler: linear warmup, then cosine decay (:func:`cosine_warmup_schedule`).

    Every parameter group's learning rate is its initial ``lr`` times the scheduled factor.
    The "epochs" may be epochs or steps: whatever unit ``scheduler.step()`` is called in.

    Args:
        optimizer: The optimizer whose learning rates are scheduled.
        warmup_epochs: Number of warmup epochs (or steps), between 0 and ``max_epochs``.
        max_epochs: Total number of epochs (or steps), warmup included.
        last_epoch: Index of the last epoch, -1 to start afresh (PyTorch convention).
        start_value: Factor at the end of warmup.
        end_value: Factor at the last epoch.
        period: Epochs of one full cosine cycle after warmup; ``None`` for a half cycle.
        warmup_start_value: Factor the warmup ramps up from.
        warmup_end_value: Factor at the end of warmup; defaults to ``start_value``.

    Raises:
        ValueError: If ``warmup_epochs`` is negative or exceeds ``max_epochs``, or
            ``period`` is not positive.

    Example:
        >>> model = torch.nn.Linear(2, 2)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> scheduler = CosineWarmupScheduler(optimizer, warmup_epochs=2, max_epochs=10)
        >>> round(optimizer.param_groups[0]["lr"], 6)  # first warmup step
        0.05
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_epochs: int,
        max_epochs: int,
        last_epoch: int = -1,
        start_value: float = 1.0,
        end_value: float = 0.001,
        period: int | None = None,
        warmup_start_value: float = 0.0,
        warmup_end_value: float | None = None,
    ) -> None:
        _check_non_negative("warmup_epochs", warmup_epochs)
        if warmup_epochs > max_epochs:
            raise ValueError(
                f"warmup_epochs must be <= max_epochs, got warmup_epochs={warmup_epochs!r} "
                f"and max_epochs={max_epochs!r}."
            )
        _check_period(period)
        self.warmup_epochs = warmup_epochs
        self.max_epochs = max_epochs
        self.start_value = start_value
        self.end_value = end_value
        self.period = period
        self.warmup_start_value = warmup_start_value
        self.warmup_end_value = warmup_end_value
        super().__init__(optimizer=optimizer, lr_lambda=self.scale_lr, last_epoch=last_epoch)

    def scale_lr(self, epoch: int) -> float:
        """The learning-rate factor at ``epoch``.

        Args:
            epoch: Current epoch (or step).

        Returns:
            The factor the initial learning rates are multiplied by.
        """
        return cosine_warmup_schedule(
            step=epoch,
            max_steps=self.max_epochs,
            start_value=self.start_value,
            end_value=self.end_value,
            warmup_steps=self.warmup_epochs,
            warmup_start_value=self.warmup_start_value,
            warmup_end_value=self.warmup_end_value,
            period=self.period,
        )
