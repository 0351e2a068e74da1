"""Jigsaw puzzle augmentation (Noroozi & Favaro, 2016, https://arxiv.org/abs/1603.09246),
the pretext transform of PIRL (Misra & van der Maaten, 2019, https://arxiv.org/abs/1912.01991)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL.Image import Image
from torch import Tensor

from fastssl.transforms.torchvision_v2_compatibility import ToTensor

_TO_TENSOR = ToTensor()


class Jigsaw:
    """Cuts an image into ``n_grid`` x ``n_grid`` tiles, transforms each, shuffles them.

    Papers: "Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles",
    Noroozi & Favaro, ECCV 2016, https://arxiv.org/abs/1603.09246; used by "Self-Supervised
    Learning of Pretext-Invariant Representations" (PIRL), Misra & van der Maaten, CVPR 2020,
    https://arxiv.org/abs/1912.01991.

    The top-left ``img_size`` x ``img_size`` square of the image is divided into cells of
    ``grid_size = img_size // n_grid`` pixels; from each cell a ``crop_size`` square is cut at
    a random offset in [0, grid_size - crop_size] (per axis), so tiles never touch and the
    network cannot solve the puzzle from continuous edges. Each tile goes through
    ``transform`` separately, and the stacked tiles are returned in a random order.

    Same interface as lightly 1.6's ``Jigsaw``. Unlike lightly, (C, H, W) tensors work too
    (lightly's numpy slicing assumes (H, W, C)), tiles are handed to ``transform`` as the
    input's type (PIL crop or tensor slice), random draws come from ``torch``'s generator,
    and an image smaller than ``n_grid * grid_size`` raises a ValueError (lightly's tiles
    come out truncated and stacking them fails).

    Input: PIL image (H, W) or tensor (C, H, W), with H, W >= n_grid * grid_size.
    Output: tensor (n_grid ** 2, C, crop_size, crop_size) for a size-preserving
    ``transform`` such as the default ``ToTensor()``.

    Args:
        n_grid: Tiles per side; n_grid ** 2 tiles.
        img_size: Side of the square (at the image's top left) that is cut into tiles.
        crop_size: Side of each tile, <= img_size // n_grid.
        transform: Applied to every tile; must return a tensor.

    Raises:
        ValueError: If ``n_grid`` < 1 or ``crop_size`` is not in [1, img_size // n_grid].

    >>> import torch
    >>> jigsaw = Jigsaw(n_grid=2, img_size=8, crop_size=3)
    >>> jigsaw(torch.zeros(3, 8, 8, dtype=torch.uint8)).shape
    torch.Size([4, 3, 3, 3])
    """

    def __init__(
        self,
        n_grid: int = 3,
        img_size: int = 255,
        crop_size: int = 64,
        transform: Callable[[Any], Tensor] = _TO_TENSOR,
    ) -> None:
        if not isinstance(n_grid, int) or n_grid < 1:
            raise ValueError(f"n_grid must be an int >= 1, got {n_grid!r}.")
        grid_size = int(img_size / n_grid)
        if not 1 <= crop_size <= grid_size:
            raise ValueError(
                f"crop_size must be in [1, img_size // n_grid] = [1, {grid_size}], "
                f"got {crop_size!r}."
            )
        self.n_grid = n_grid
        self.img_size = img_size
        self.crop_size = crop_size
        self.grid_size = grid_size
        self.side = grid_size - crop_size  # largest offset of a tile inside its cell
        self.transform = transform

    def __call__(self, img: Tensor | Image) -> Tensor:
        """Returns the transformed tiles of ``img`` in random order.

        Args:
            img: PIL image or (C, H, W) tensor.

        Returns:
            Tensor (n_grid ** 2, ...) of the stacked, shuffled, transformed tiles.

        Raises:
            ValueError: If the image is smaller than n_grid * grid_size pixels on a side.
        """
        height, width = (img.height, img.width) if isinstance(img, Image) else img.shape[-2:]
        needed = self.n_grid * self.grid_size
        if height < needed or width < needed:
            raise ValueError(
                f"Jigsaw needs an image of at least {needed}x{needed} pixels "
                f"(n_grid={self.n_grid}, img_size={self.img_size}), got {height}x{width}."
            )
        n_tiles = self.n_grid**2
        cells = torch.arange(n_tiles)
        # Row-major cells; each tile's top-left corner is its cell's corner plus an offset.
        offsets = torch.randint(0, self.side + 1, (2, n_tiles))
        tops = ((cells // self.n_grid) * self.grid_size + offsets[0]).tolist()
        lefts = ((cells % self.n_grid) * self.grid_size + offsets[1]).tolist()
        size = self.crop_size
        tiles = []
        for top, left in zip(tops, lefts, strict=True):
            if isinstance(img, Image):
                tile: Tensor | Image = img.crop((left, top, left + size, top + size))
            else:
                tile = img[..., top : top + size, left : left + size]
            tiles.append(self.transform(tile))
        return torch.stack(tiles)[torch.randperm(n_tiles)]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_grid={self.n_grid}, img_size={self.img_size}, "
            f"crop_size={self.crop_size}, transform={self.transform!r})"
        )
