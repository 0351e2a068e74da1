"""Synthetic images and measurements shared by the transform tests."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

TAG_SIZE = 64
TAG_STEP = 4  # red = TAG_STEP * column, green = TAG_STEP * row: survives resizing as coordinates


def random_pil(size: int = 48, seed: int = 0) -> Image.Image:
    """A reproducible random RGB PIL image."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def tagged_image() -> Tensor:
    """(3, 64, 64) uint8 image whose red/green channels encode column/row (times 4)."""
    coords = torch.arange(TAG_SIZE, dtype=torch.uint8) * TAG_STEP
    red = coords.view(1, -1).expand(TAG_SIZE, TAG_SIZE)
    green = coords.view(-1, 1).expand(TAG_SIZE, TAG_SIZE)
    blue = torch.full((TAG_SIZE, TAG_SIZE), 7, dtype=torch.uint8)
    return torch.stack([red, green, blue]).contiguous()


def to_levels(view: Tensor) -> Tensor:
    """Un-normalised [0, 1] float view -> integer levels 0..255."""
    return (view * 255).round().to(torch.int64)


def crop_box(view: Tensor) -> tuple[float, float]:
    """(area fraction, aspect ratio w/h) of the crop that produced ``view`` of the tagged image.

    Upsampling keeps the crop's edge pixels (bilinear clamps at the border), so min/max of the
    coordinate channels are the crop's first/last column and row.
    """
    levels = to_levels(view)
    width = (levels[0].max() - levels[0].min()).item() / TAG_STEP + 1
    height = (levels[1].max() - levels[1].min()).item() / TAG_STEP + 1
    return width * height / TAG_SIZE**2, width / height


def is_hflipped(view: Tensor) -> bool:
    levels = to_levels(view)
    return bool(levels[0, 0, 0] > levels[0, 0, -1])


def is_vflipped(view: Tensor) -> bool:
    levels = to_levels(view)
    return bool(levels[1, 0, 0] > levels[1, -1, 0])


def is_gray(view: Tensor) -> bool:
    levels = to_levels(view)
    return bool((levels[0] == levels[1]).all() and (levels[1] == levels[2]).all())


def rate(predicate: Callable[[Any], bool], transform: Callable[[Any], Any], n: int) -> float:
    image = tagged_image()
    return sum(predicate(transform(image)) for _ in range(n)) / n


def binomial_tolerance(p: float, n: int, sigmas: float = 4.0) -> float:
    """Half-width of a +-``sigmas`` standard-deviation band of a binomial rate (fails ~1e-4)."""
    return sigmas * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-9


def assert_same_structure(ours: list[Tensor], theirs: list[Tensor]) -> None:
    """Same number of views, and per view: plain-tensor-compatible, same shape and dtype."""
    assert len(ours) == len(theirs)
    for mine, ref in zip(ours, theirs, strict=True):
        assert isinstance(mine, torch.Tensor)
        assert mine.shape == ref.shape
        assert mine.dtype == ref.dtype


def assert_same_signature(ours: type, theirs: type, extra: tuple[str, ...] = ()) -> None:
    """Constructor argument names, order and defaults equal lightly's (``extra`` are ours only)."""
    import inspect

    def params(cls: type) -> list[tuple[str, Any]]:
        signature = inspect.signature(cls.__init__)  # type: ignore[misc]
        return [
            (p.name, p.default)
            for p in signature.parameters.values()
            if p.name != "self" and p.name not in extra
        ]

    assert params(ours) == params(theirs)
