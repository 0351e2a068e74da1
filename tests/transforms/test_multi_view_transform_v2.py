from __future__ import annotations

import torch
from lightly.transforms.multi_view_transform_v2 import (
    MultiViewTransformV2 as LightlyMultiViewTransformV2,
)
from torchvision import tv_tensors
from torchvision.transforms import v2

from fastssl.transforms.multi_view_transform_v2 import MultiViewTransformV2


def _sample() -> tuple[tv_tensors.Image, tv_tensors.BoundingBoxes, tv_tensors.Mask]:
    image = tv_tensors.Image(torch.randint(0, 256, (3, 24, 32), dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([[2.0, 3.0, 12.0, 20.0]]), format="XYXY", canvas_size=(24, 32)
    )
    mask = tv_tensors.Mask((torch.arange(24 * 32).view(24, 32) % 5).to(torch.uint8))
    return image, boxes, mask


def test_views_equal_lightly_and_keep_targets_consistent() -> None:
    transforms = [
        v2.Compose([v2.RandomResizedCrop(16, antialias=True), v2.RandomHorizontalFlip()]),
        v2.RandomVerticalFlip(p=1.0),
        v2.RandomResizedCrop(8, antialias=True),
    ]
    sample = _sample()
    torch.manual_seed(0)
    ours = MultiViewTransformV2(transforms)(*sample)
    torch.manual_seed(0)
    theirs = LightlyMultiViewTransformV2(transforms)(*sample)
    assert len(ours) == len(theirs) == 3
    for mine, ref in zip(ours, theirs, strict=True):
        assert isinstance(mine, tuple) and len(mine) == 3
        for a, b in zip(mine, ref, strict=True):
            assert type(a) is type(b) and torch.equal(a, b)
    # The vertical flip moved image, boxes and mask together.
    image, boxes, mask = ours[1]
    assert torch.equal(image, sample[0].flip(-2)) and torch.equal(mask, sample[2].flip(-2))
    assert boxes.tolist() == [[2.0, 4.0, 12.0, 21.0]]


def test_single_argument_and_no_transforms() -> None:
    image = torch.rand(3, 8, 8)
    views = MultiViewTransformV2([v2.RandomHorizontalFlip(p=1.0)])(image)
    assert len(views) == 1 and torch.equal(views[0], image.flip(-1))
    assert MultiViewTransformV2([])(image) == []
