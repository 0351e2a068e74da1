from __future__ import annotations

import pytest
import torch
from lightly.transforms.multi_view_transform import MultiViewTransform as LightlyMultiViewTransform
from torchvision.transforms import v2

from fastssl.transforms.multi_view_transform import MultiViewTransform, ViewTransform
from fastssl.transforms.view_spec import ViewSpec
from tests.transforms._images import assert_same_structure, random_pil, tagged_image


def test_one_view_per_transform_like_lightly() -> None:
    small, large = ViewTransform(ViewSpec(crop_size=8)), ViewTransform(ViewSpec(crop_size=16))
    image = random_pil(20)
    ours = MultiViewTransform([small, large, small])(image)
    theirs = LightlyMultiViewTransform([small, large, small])(image)
    assert_same_structure(ours, theirs)
    assert [v.shape[-1] for v in ours] == [8, 16, 8]


def test_view_specs_and_error_for_opaque_transforms() -> None:
    spec = ViewSpec(crop_size=8)
    transform = MultiViewTransform([ViewTransform(spec), ViewTransform(spec.replace(hf_prob=1.0))])
    assert transform.view_specs == [spec, spec.replace(hf_prob=1.0)]
    opaque = MultiViewTransform([ViewTransform(spec), v2.ToDtype(torch.float32)])
    with pytest.raises(ValueError, match=r"view 1 \(ToDtype.*\) has no ViewSpec"):
        opaque.view_specs  # noqa: B018
    assert len(opaque(tagged_image())) == 2
