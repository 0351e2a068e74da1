"""Random solarization, used by BYOL (https://arxiv.org/abs/2006.07733) and DINO
(https://arxiv.org/abs/2104.14294)."""

from __future__ import annotations

from typing import TypeVar

import torch
from PIL import ImageOps
from PIL.Image import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as F

_ImageT = TypeVar("_ImageT", Tensor, Image)


class RandomSolarization:
    """Inverts every pixel value >= ``threshold`` with probability ``prob``.

    Same constructor as ``lightly.transforms.RandomSolarization``; also accepts tensors
    (uint8: threshold in [0, 255]; float in [0, 1]: threshold / 255) and draws its randomness
    from ``torch`` so ``torch.manual_seed`` makes it reproducible.

    Input: PIL image or (C, H, W) tensor. Output: same type as the input.

    Args:
        prob: Probability of solarizing, in [0, 1].
        threshold: Pixel values >= threshold are inverted, in [0, 256].

    >>> import torch
    >>> RandomSolarization(prob=1.0)(torch.tensor([[[10, 200]]], dtype=torch.uint8))
    tensor([[[10, 55]]], dtype=torch.uint8)
    """

    def __init__(self, prob: float = 0.5, threshold: int = 128) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob!r}.")
        if not 0 <= threshold <= 256:
            raise ValueError(f"threshold must be in [0, 256], got {threshold!r}.")
        self.prob = prob
        self.threshold = threshold

    def __call__(self, sample: _ImageT) -> _ImageT:
        """Solarizes ``sample`` with probability ``prob``.

        Args:
            sample: PIL image or (C, H, W) tensor.

        Returns:
            The (possibly) solarized image, same type as ``sample``.
        """
        if self.prob <= 0.0 or float(torch.rand(())) >= self.prob:
            return sample
        if isinstance(sample, Tensor):
            if sample.is_floating_point():
                return F.solarize(sample, self.threshold / 255.0)
            if self.threshold > 255:  # nothing reaches the threshold
                return sample
            return F.solarize(sample, self.threshold)
        return ImageOps.solarize(sample, threshold=self.threshold)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prob={self.prob}, threshold={self.threshold})"
