"""Random rotations (by a fixed angle or a random angle), for rotation-invariant data such
as satellite or medical images. Same names and arguments as ``lightly.transforms.rotation``."""

from __future__ import annotations

from typing import TypeVar

import torch
from PIL.Image import Image
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

_ImageT = TypeVar("_ImageT", Tensor, Image)


class RandomRotate:
    """Rotates an image counter-clockwise by ``angle`` degrees with probability ``prob``.

    Multiples of 90 degrees on square tensors use ``torch.rot90``: exact and cheap.

    Args:
        prob: Probability of rotating, in [0, 1].
        angle: Rotation angle in degrees (counter-clockwise).

    >>> import torch
    >>> RandomRotate(prob=1.0)(torch.arange(4).view(1, 2, 2))
    tensor([[[1, 3],
             [0, 2]]])
    """

    def __init__(self, prob: float = 0.5, angle: int = 90) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob!r}.")
        self.prob = prob
        self.angle = angle

    def __call__(self, image: _ImageT) -> _ImageT:
        """Rotates ``image`` with probability ``prob``.

        Args:
            image: PIL image or (C, H, W) tensor.

        Returns:
            The (possibly) rotated image, same type as ``image``.
        """
        if self.prob <= 0.0 or float(torch.rand(())) >= self.prob:
            return image
        if (
            isinstance(image, Tensor)
            and self.angle % 90 == 0
            and image.shape[-1] == image.shape[-2]
        ):
            return torch.rot90(image, k=int(self.angle // 90) % 4, dims=(-2, -1))
        return F.rotate(image, self.angle)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prob={self.prob}, angle={self.angle})"


class RandomRotateDegrees:
    """Rotates an image by a random angle with probability ``prob``.

    Args:
        prob: Probability of rotating, in [0, 1].
        degrees: (min, max) range of angles, or a number d for (-d, d). Counter-clockwise.
    """

    def __init__(self, prob: float, degrees: float | tuple[float, float]) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob!r}.")
        self.prob = prob
        self.degrees = degrees
        self.transform = v2.RandomApply([v2.RandomRotation(degrees=degrees)], p=prob)

    def __call__(self, image: _ImageT) -> _ImageT:
        """Rotates ``image`` with probability ``prob``.

        Args:
            image: PIL image or (C, H, W) tensor.

        Returns:
            The (possibly) rotated image, same type as ``image``.
        """
        rotated: _ImageT = self.transform(image)
        return rotated

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prob={self.prob}, degrees={self.degrees})"


def random_rotation_transform(
    rr_prob: float,
    rr_degrees: float | tuple[float, float] | None,
) -> RandomRotate | RandomRotateDegrees:
    """Returns a 90-degree rotation when ``rr_degrees`` is None, else a random-angle one.

    Args:
        rr_prob: Probability of rotating.
        rr_degrees: None (rotate by 90 degrees), a number d (angle in [-d, d]) or (min, max).

    Returns:
        The rotation transform.
    """
    if rr_degrees is None:
        return RandomRotate(prob=rr_prob, angle=90)
    return RandomRotateDegrees(prob=rr_prob, degrees=rr_degrees)
