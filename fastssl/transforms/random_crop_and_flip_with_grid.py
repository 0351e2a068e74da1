"""Random resized crops and flips that remember where the view came from, for VICRegL
(Bardes et al., 2022, https://arxiv.org/abs/2210.01571).

VICRegL matches the local features of two views by the position of each feature-map cell in
the *original* image. ``RandomResizedCropAndFlip`` therefore returns, next to the view, an
(N, N, 2) grid of original-image (x, y) coordinates, one per cell of the view's N x N feature
map, already flipped along with the view. Same names and arguments as
``lightly.transforms.random_crop_and_flip_with_grid``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypeVar

import torch
from PIL.Image import Image
from torch import Tensor, nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

_ImageT = TypeVar("_ImageT", Tensor, Image)


@dataclass
class Location:
    """Where a view was cut from its original image, in original-image pixels.

    Same fields, order and defaults as lightly 1.6's ``Location``.

    >>> Location(top=2, left=3, height=10, width=12, image_height=32, image_width=32)
    Location(top=2, left=3, height=10, width=12, image_height=32, image_width=32, \
horizontal_flip=False, vertical_flip=False)
    """

    # Row of the crop's top-left corner.
    top: float
    # Column of the crop's top-left corner.
    left: float
    # Height of the crop.
    height: float
    # Width of the crop.
    width: float
    # Height of the original image.
    image_height: float
    # Width of the original image.
    image_width: float
    # Whether the view is flipped left-right relative to the crop.
    horizontal_flip: bool = False
    # Whether the view is flipped top-bottom relative to the crop.
    vertical_flip: bool = False


class RandomResizedCropWithLocation(v2.RandomResizedCrop):
    """``torchvision.transforms.v2.RandomResizedCrop`` that also returns the crop's ``Location``.

    Same constructor as the torchvision class (``size``, ``scale``, ``ratio``,
    ``interpolation``, ``antialias``); the crop box is drawn with the same random numbers, so
    ``torch.manual_seed`` gives the crops of torchvision and of lightly 1.6.

    Input: PIL image or (..., C, H, W) tensor.
    Output: ``(view, location)``: the resized crop (same type as the input) and its Location.

    >>> import torch
    >>> crop = RandomResizedCropWithLocation(size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    >>> view, location = crop(torch.zeros(3, 16, 16))
    >>> tuple(view.shape), (location.top, location.left, location.height, location.width)
    ((3, 8, 8), (0, 0, 16, 16))
    """

    def forward(self, img: _ImageT) -> tuple[_ImageT, Location]:
        """Crops a random box of ``img``, resizes it to ``size`` and returns it with its box.

        Args:
            img: PIL image or (..., C, H, W) tensor.

        Returns:
            The view and the Location of the crop in ``img``.
        """
        # torchvision's public static sampler (same draws as the v2 transform and as lightly).
        top, left, height, width = self.get_params(img, self.scale, self.ratio)
        image_height, image_width = F.get_size(img)
        location = Location(
            top=top,
            left=left,
            height=height,
            width=width,
            image_height=image_height,
            image_width=image_width,
        )
        view = F.resized_crop(
            img,
            top,
            left,
            height,
            width,
            size=self.size,
            interpolation=self.interpolation,
            antialias=self.antialias,
        )
        return view, location


class RandomHorizontalFlipWithLocation(v2.RandomHorizontalFlip):
    """Flips an image left-right with probability ``p`` and records it in its ``Location``.

    Same constructor as ``torchvision.transforms.v2.RandomHorizontalFlip`` (``p=0.5``); one
    ``torch.rand`` draw per call, like torchvision and lightly 1.6. Unlike lightly, the given
    Location is not modified: a flipped copy is returned, and flipping twice toggles
    ``horizontal_flip`` back (lightly leaves it True).

    Input: ``(image, location)``. Output: ``(image, location)``, image of the input's type.

    >>> import torch
    >>> flip = RandomHorizontalFlipWithLocation(p=1.0)
    >>> image, location = flip(torch.tensor([[[1, 2]]]), Location(0, 0, 1, 2, 1, 2))
    >>> image.tolist(), location.horizontal_flip
    ([[[2, 1]]], True)
    """

    def forward(self, img: _ImageT, location: Location) -> tuple[_ImageT, Location]:
        """Flips ``img`` left-right with probability ``p``.

        Args:
            img: PIL image or (..., C, H, W) tensor.
            location: Location of ``img`` in its original image.

        Returns:
            The (possibly) flipped image and its Location.
        """
        if torch.rand(1) < self.p:
            img = F.horizontal_flip(img)
            location = dataclasses.replace(location, horizontal_flip=not location.horizontal_flip)
        return img, location


class RandomVerticalFlipWithLocation(v2.RandomVerticalFlip):
    """Flips an image top-bottom with probability ``p`` and records it in its ``Location``.

    Same constructor as ``torchvision.transforms.v2.RandomVerticalFlip`` (``p=0.5``); one
    ``torch.rand`` draw per call. Like ``RandomHorizontalFlipWithLocation``, a new Location is
    returned and a second flip toggles ``vertical_flip`` back.

    Input: ``(image, location)``. Output: ``(image, location)``, image of the input's type.

    >>> import torch
    >>> flip = RandomVerticalFlipWithLocation(p=1.0)
    >>> image, location = flip(torch.tensor([[[1], [2]]]), Location(0, 0, 2, 1, 2, 1))
    >>> image.tolist(), location.vertical_flip
    ([[[2], [1]]], True)
    """

    def forward(self, img: _ImageT, location: Location) -> tuple[_ImageT, Location]:
        """Flips ``img`` top-bottom with probability ``p``.

        Args:
            img: PIL image or (..., C, H, W) tensor.
            location: Location of ``img`` in its original image.

        Returns:
            The (possibly) flipped image and its Location.
        """
        if torch.rand(1) < self.p:
            img = F.vertical_flip(img)
            location = dataclasses.replace(location, vertical_flip=not location.vertical_flip)
        return img, location


class RandomResizedCropAndFlip(nn.Module):
    """Random resized crop, horizontal flip and vertical flip, returning the view and the
    original-image coordinates of an N x N grid over it (VICRegL,
    https://arxiv.org/abs/2210.01571).

    Same arguments and defaults as lightly 1.6's ``RandomResizedCropAndFlip``. The crop keeps
    torchvision's default aspect ratios (3/4 to 4/3) and bilinear resizing. Random numbers are
    drawn in the order crop, horizontal flip, vertical flip, as lightly does, so a seed gives
    the same views and grids.

    Input: PIL image or (C, H, W) tensor.
    Output: ``(view, grid)``: the (crop_size, crop_size) view (same type as the input) and a
    float32 grid of shape (grid_size, grid_size, 2), see ``location_to_NxN_grid``.

    Args:
        grid_size: Number of grid cells per side (the view's feature-map size).
        crop_size: Output size of the random resized crop, in pixels.
        crop_min_scale: Minimum area fraction of the crop.
        crop_max_scale: Maximum area fraction of the crop.
        hf_prob: Probability of a horizontal flip.
        vf_prob: Probability of a vertical flip.

    >>> import torch
    >>> transform = RandomResizedCropAndFlip(grid_size=3, crop_size=16)
    >>> view, grid = transform(torch.zeros(3, 32, 32, dtype=torch.uint8))
    >>> tuple(view.shape), tuple(grid.shape)
    ((3, 16, 16), (3, 3, 2))
    """

    def __init__(
        self,
        grid_size: int = 7,
        crop_size: int = 224,
        crop_min_scale: float = 0.05,
        crop_max_scale: float = 0.2,
        hf_prob: float = 0.5,
        vf_prob: float = 0.5,
    ) -> None:
        super().__init__()
        if not isinstance(grid_size, int) or grid_size < 1:
            raise ValueError(f"grid_size must be an int >= 1, got {grid_size!r}.")
        self.grid_size = grid_size
        self.crop_size = crop_size
        self.crop_min_scale = crop_min_scale
        self.crop_max_scale = crop_max_scale
        self.hf_prob = hf_prob
        self.vf_prob = vf_prob
        self.resized_crop = RandomResizedCropWithLocation(
            size=crop_size, scale=(crop_min_scale, crop_max_scale)
        )
        self.horizontal_flip = RandomHorizontalFlipWithLocation(hf_prob)
        self.vertical_flip = RandomVerticalFlipWithLocation(vf_prob)

    def forward(self, img: _ImageT) -> tuple[_ImageT, Tensor]:
        """Crops and flips ``img`` and returns the view with its coordinate grid.

        Args:
            img: PIL image or (C, H, W) tensor.

        Returns:
            The view and its (grid_size, grid_size, 2) grid.
        """
        view, location = self.resized_crop(img)
        view, location = self.horizontal_flip(view, location)
        view, location = self.vertical_flip(view, location)
        return view, self.location_to_NxN_grid(location=location)

    def location_to_NxN_grid(self, location: Location) -> Tensor:
        """Original-image (x, y) coordinates of a grid_size x grid_size grid over the view.

        ``grid[i, j] = (x[j], y[i])``: row i of the view's feature map, column j. The points
        follow lightly 1.6's convention (so that grids, and the VICRegL loss, match it): the
        x coordinates are ``grid_size`` evenly spaced points from ``left`` to ``left + width``
        shifted right by half a cell (``width / (2 grid_size)``), likewise y. For grid_size > 1
        these are not exactly the cell centres, which would be spaced ``width / grid_size``
        apart: the points span the crop plus half a cell. Flips reverse the order of x or y,
        so that ``grid[i, j]`` stays the position of the view's pixel block (i, j).

        Args:
            location: Location of the view in its original image.

        Returns:
            float32 tensor of shape (grid_size, grid_size, 2).
        """
        n = self.grid_size
        # Fractions i / (n - 1) of torch.linspace(0, 1, n); computed in float64, like a
        # coordinate in pixels should be, then stored as float32.
        steps = torch.linspace(0.0, 1.0, n, dtype=torch.float64) + 0.5 / n
        x = location.left + location.width * steps
        y = location.top + location.height * steps
        if location.horizontal_flip:
            x = x.flip(0)
        if location.vertical_flip:
            y = y.flip(0)
        grid = torch.stack([x.view(1, n).expand(n, n), y.view(n, 1).expand(n, n)], dim=-1)
        return grid.to(torch.float32)
