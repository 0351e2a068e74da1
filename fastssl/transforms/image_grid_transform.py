"""``ImageGridTransform``: several views of an image, each with the grid that locates it in the
image (VICRegL, Bardes et al., 2022, https://arxiv.org/abs/2210.01571)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PIL.Image import Image
from torch import Tensor

# (image -> (view, grid), view -> augmented view)
ImageGridPair = tuple[Callable[[Any], tuple[Any, Any]], Callable[[Any], Any]]


class ImageGridTransform:
    """Turns an image into views and grids, one of each per ``(image_grid, view)`` pair.

    Same interface as lightly 1.6's ``ImageGridTransform``. Every pair is applied once:
    ``image_grid_transform(image)`` makes a view and its grid (e.g.
    ``RandomResizedCropAndFlip``), ``view_transform(view)`` augments the view further
    (e.g. ``VICRegLViewTransform``). The output lists all views first, then all grids, in
    pair order, so ``output[k]`` and ``output[len(transforms) + k]`` belong together.

    Input: PIL image or (C, H, W) tensor.
    Output: list of 2 * len(transforms): the views, then the grids.

    Args:
        transforms: Sequence of ``(image_grid_transform, view_transform)`` pairs.

    >>> import torch
    >>> pair = (lambda image: (image, torch.zeros(2, 2, 2)), lambda view: view.float())
    >>> output = ImageGridTransform([pair, pair])(torch.zeros(3, 4, 4, dtype=torch.uint8))
    >>> [tuple(o.shape) for o in output]
    [(3, 4, 4), (3, 4, 4), (2, 2, 2), (2, 2, 2)]
    """

    def __init__(self, transforms: Sequence[ImageGridPair]) -> None:
        self.transforms = transforms

    def __call__(self, image: Tensor | Image) -> list[Any]:
        """Returns ``[view_0, ..., view_{n-1}, grid_0, ..., grid_{n-1}]``."""
        views, grids = [], []
        for image_grid_transform, view_transform in self.transforms:
            view, grid = image_grid_transform(image)
            views.append(view_transform(view))
            grids.append(grid)
        return views + grids
