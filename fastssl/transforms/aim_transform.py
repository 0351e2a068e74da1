"""AIM's single view (El-Nouby et al., 2024, https://arxiv.org/abs/2401.08541)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastssl.transforms.mae_transform import MAETransform
from fastssl.transforms.utils import IMAGENET_NORMALIZE, lightly_arguments


class AIMTransform(MAETransform):
    """AIM's augmentation (AIM, https://arxiv.org/abs/2401.08541): MAE's with ``min_scale=0.4``.

    Same arguments and defaults as lightly 1.6's ``AIMTransform``.

    Input: PIL image or (C, H, W) uint8 tensor. Output: list of 1 tensor (C, H, W) float32.

    >>> import torch
    >>> len(AIMTransform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8)))
    1
    """

    def __init__(
        self,
        input_size: int | tuple[int, int] = 224,
        min_scale: float = 0.4,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        super().__init__(**lightly_arguments(locals()))
