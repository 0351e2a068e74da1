from __future__ import annotations

import pytest
import torch
from lightly.transforms.multi_crop_transform import MultiCropTranform as LightlyMultiCropTranform
from torchvision.transforms import v2

from fastssl.transforms.multi_crop_transform import MultiCropTranform
from fastssl.transforms.swav_transform import SwaVViewTransform
from tests.transforms._images import (
    assert_same_signature,
    assert_same_structure,
    crop_box,
    random_pil,
    tagged_image,
)


def test_matches_lightly_with_an_arbitrary_transform() -> None:
    assert_same_signature(MultiCropTranform, LightlyMultiCropTranform)
    after = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    args = dict(
        crop_sizes=(16, 8),
        crop_counts=(1, 3),
        crop_min_scales=(0.5, 0.1),
        crop_max_scales=(1.0, 0.5),
    )
    image = random_pil(24)
    assert_same_structure(
        MultiCropTranform(transforms=after, **args)(image),
        LightlyMultiCropTranform(transforms=after, **args)(image),
    )


def test_crop_scales_per_category() -> None:
    torch.manual_seed(0)
    view = SwaVViewTransform(
        hf_prob=0.0, cj_prob=0.0, random_gray_scale=0.0, gaussian_blur=0.0, normalize=None
    )
    transform = MultiCropTranform((64, 64), (1, 2), (0.6, 0.1), (1.0, 0.3), view)
    for _ in range(40):
        large, *small = (crop_box(v)[0] for v in transform(tagged_image()))
        assert 0.6 - 0.035 <= large <= 1.0
        assert all(0.1 - 0.035 <= s <= 0.3 + 0.035 for s in small)


@pytest.mark.parametrize("bad", ["crop_counts", "crop_min_scales", "crop_max_scales"])
def test_length_mismatch_names_the_argument(bad: str) -> None:
    args = dict(
        crop_sizes=(16, 8),
        crop_counts=(1, 3),
        crop_min_scales=(0.5, 0.1),
        crop_max_scales=(1.0, 0.5),
    )
    args[bad] = args[bad][:1]
    with pytest.raises(
        ValueError, match=f"Length of crop_sizes and {bad} must be equal but are 2 and 1"
    ):
        MultiCropTranform(transforms=SwaVViewTransform(), **args)
