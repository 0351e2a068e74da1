from __future__ import annotations

import numpy as np
import pytest
import torch
from lightly.transforms.rotation import RandomRotate as LightlyRandomRotate
from torchvision.transforms.v2 import functional as F

from fastssl.transforms.rotation import (
    RandomRotate,
    RandomRotateDegrees,
    random_rotation_transform,
)
from tests.transforms._images import binomial_tolerance, random_pil, tagged_image


@pytest.mark.parametrize("angle", [90, 180, 270, -90])
def test_fixed_rotation_equals_lightly(angle: int) -> None:
    image = random_pil(16)
    expected = np.array(LightlyRandomRotate(prob=1.0, angle=angle)(image))
    ours = RandomRotate(prob=1.0, angle=angle)
    assert np.array_equal(np.asarray(ours(image)), expected)
    # The tensor fast path (torch.rot90) gives the same pixels.
    rotated = ours(F.pil_to_tensor(image))
    assert torch.equal(rotated, torch.from_numpy(expected).permute(2, 0, 1))


def test_non_square_tensor_uses_rotate() -> None:
    image = torch.zeros(3, 8, 12, dtype=torch.uint8)
    assert RandomRotate(prob=1.0, angle=90)(image).shape == (3, 8, 12)


def test_rate_and_factory() -> None:
    torch.manual_seed(0)
    image = tagged_image()
    n, p = 800, 0.25
    rotate = RandomRotate(prob=p)
    hits = sum(not torch.equal(rotate(image), image) for _ in range(n))
    assert abs(hits / n - p) <= binomial_tolerance(p, n)
    assert isinstance(random_rotation_transform(0.5, None), RandomRotate)
    degrees = random_rotation_transform(1.0, (10.0, 20.0))
    assert isinstance(degrees, RandomRotateDegrees)
    assert degrees(image).shape == image.shape
    with pytest.raises(ValueError, match=r"prob must be in \[0, 1\], got 2"):
        RandomRotate(prob=2)
