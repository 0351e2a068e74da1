from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.transforms.image_grid_transform import (
    ImageGridTransform as LightlyImageGridTransform,
)
from torch import Tensor

from fastssl.transforms.image_grid_transform import ImageGridTransform
from fastssl.transforms.random_crop_and_flip_with_grid import RandomResizedCropAndFlip
from tests.transforms._images import assert_same_signature, random_pil

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _shift(offset: float) -> Any:
    """An image-grid transform whose outputs say which one made them."""

    def make(image: Tensor) -> tuple[Tensor, Tensor]:
        return image + offset, torch.full((2, 2, 2), offset)

    return make


def test_views_then_grids_like_lightly() -> None:
    assert_same_signature(ImageGridTransform, LightlyImageGridTransform)
    pairs = [(_shift(1.0), lambda v: v * 2), (_shift(5.0), lambda v: v * 3)]
    image = torch.zeros(3, 4, 4)
    ours = ImageGridTransform(pairs)(image)
    theirs = LightlyImageGridTransform(pairs)(image)
    assert len(ours) == len(theirs) == 4
    for mine, ref in zip(ours, theirs, strict=True):
        assert torch.equal(mine, ref)
    # Views (transformed by their own view transform) first, then the grids, in pair order.
    assert [o.flatten()[0].item() for o in ours] == [2.0, 15.0, 1.0, 5.0]


def test_empty() -> None:
    assert ImageGridTransform([])(torch.zeros(3, 4, 4)) == []


@pytest.mark.parametrize("as_pil", [False, True])
def test_seeded_crops_match_lightly(as_pil: bool) -> None:
    image: Any = random_pil(40) if as_pil else torch.randint(0, 256, (3, 40, 40))
    pairs = [
        (RandomResizedCropAndFlip(grid_size=3, crop_size=16), lambda v: v),
        (RandomResizedCropAndFlip(grid_size=2, crop_size=8), lambda v: v),
    ]
    torch.manual_seed(3)
    ours = ImageGridTransform(pairs)(image)
    torch.manual_seed(3)
    theirs = LightlyImageGridTransform(pairs)(image)
    assert [tuple(o.shape) for o in ours[2:]] == [(3, 3, 2), (2, 2, 2)]
    for mine, ref in zip(ours[2:], theirs[2:], strict=True):
        assert torch.equal(mine, ref)
