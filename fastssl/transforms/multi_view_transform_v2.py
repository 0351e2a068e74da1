"""``MultiViewTransformV2``: several views of data that ``torchvision.transforms.v2`` can
transform jointly (images with their bounding boxes, masks, ...)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class MultiViewTransformV2:
    """Makes one view per transform of whatever ``*args`` holds, for transforms v2.

    Same interface as lightly 1.6's ``MultiViewTransformV2``. Unlike ``MultiViewTransform``
    (one image in), every positional argument is handed to each transform, so a v2
    pipeline transforms an image together with its ``tv_tensors`` (``BoundingBoxes``,
    ``Mask``) and keeps them consistent (e.g. the same crop), as detection and segmentation
    methods (DetCon) need.

    Input: any positional arguments the transforms accept.
    Output: list of len(transforms) results, ``[transform(*args) for transform in transforms]``.

    Args:
        transforms: One callable (typically a ``v2.Compose``) per view.

    >>> import torch
    >>> from torchvision import tv_tensors
    >>> from torchvision.transforms import v2
    >>> flip = v2.RandomHorizontalFlip(p=1.0)
    >>> image, mask = tv_tensors.Image(torch.arange(4).view(1, 1, 4)), tv_tensors.Mask(
    ...     torch.arange(4).view(1, 4))
    >>> views = MultiViewTransformV2([flip, flip])(image, mask)
    >>> len(views), views[0][1].tolist()
    (2, [[3, 2, 1, 0]])
    """

    def __init__(self, transforms: Sequence[Callable[..., Any]]) -> None:
        self.transforms = transforms

    def __call__(self, *args: Any) -> list[Any]:
        """Returns ``[transform(*args) for transform in transforms]``."""
        return [transform(*args) for transform in self.transforms]
