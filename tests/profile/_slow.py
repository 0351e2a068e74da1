"""Methods made slow on purpose, for the verdict tests of ``fastssl profile``.

``SlowMethod`` is the tiny SimCLR of ``tests/train/_tiny.py`` with two knobs:
``augment_delay_s`` sleeps in the transform (per image, in the loader) and
``compute_delay_s`` sleeps in the training step (per step). Sleeping, not burning CPU, so
the slowdown is the same on a loaded 2-core machine as on an idle one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from fastssl.methods.base import StepInfo
from tests.train._tiny import TinyMethod

SLOW = "tests.profile._slow:SlowMethod"


class SleepyTransform:
    """Applies ``transform`` after sleeping ``delay_s`` (an augmentation made slow)."""

    def __init__(self, transform: Any, delay_s: float) -> None:
        self.transform, self.delay_s = transform, delay_s

    def __call__(self, image: Any) -> Any:
        time.sleep(self.delay_s)
        return self.transform(image)


class SlowMethod(TinyMethod):
    """TinyMethod whose loader (``augment_delay_s``) or step (``compute_delay_s``) is slow."""

    name = "slow"

    def __init__(
        self,
        backbone: str = "tiny",
        input_size: int = 8,
        augment_delay_s: float = 0.0,
        compute_delay_s: float = 0.0,
    ) -> None:
        super().__init__(backbone, input_size)
        self.augment_delay_s, self.compute_delay_s = augment_delay_s, compute_delay_s

    def training_step(self, views: Sequence[Tensor], info: StepInfo = StepInfo()) -> Tensor:  # noqa: B008
        time.sleep(self.compute_delay_s)
        return super().training_step(views, info)

    def default_transform(self) -> Any:
        return SleepyTransform(super().default_transform(), self.augment_delay_s)
