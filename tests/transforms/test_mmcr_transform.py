from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.transforms import mmcr_transform as lightly_mmcr
from torchvision.transforms.v2 import functional as F

from fastssl.transforms import mmcr_transform
from fastssl.transforms.byol_transform import BYOLView1Transform
from tests.transforms._images import assert_same_signature, assert_same_structure, random_pil


def test_signature_matches_lightly() -> None:
    assert_same_signature(mmcr_transform.MMCRTransform, lightly_mmcr.MMCRTransform)


@pytest.mark.parametrize(
    "kwargs", [{"k": 3, "input_size": 32}, {"k": 1, "input_size": 24, "normalize": None}]
)
def test_structure_matches_lightly(kwargs: dict[str, Any]) -> None:
    image = random_pil(40)
    ours = mmcr_transform.MMCRTransform(**kwargs)
    theirs = lightly_mmcr.MMCRTransform(**kwargs)(image)
    assert len(theirs) == kwargs["k"]
    assert_same_structure(ours(image), theirs)
    assert_same_structure(ours(F.pil_to_tensor(image)), theirs)


def test_views_are_byol_view_1() -> None:
    args = dict(input_size=32, cj_strength=0.5, min_scale=0.3, solarization_prob=0.4, vf_prob=0.2)
    specs = mmcr_transform.MMCRTransform(k=5, **args).view_specs
    assert specs == [BYOLView1Transform(**args).view_spec] * 5
    assert specs[0].blur_prob == 1.0 and specs[0].cj_bright == 0.2


def test_values_equal_lightly_when_nothing_is_random() -> None:
    # Full-image crop at the image's size, flips/rotation/grayscale at probability 1: every
    # argument reaches the views or the pixels would differ (grayscale may round differently).
    args = dict(
        k=2,
        input_size=32,
        min_scale=1.0,
        hf_prob=1.0,
        vf_prob=1.0,
        rr_prob=1.0,
        cj_prob=0.0,
        random_gray_scale=1.0,
        gaussian_blur=0.0,
    )
    image = random_pil(32)
    ours = mmcr_transform.MMCRTransform(**args)(image)
    theirs = lightly_mmcr.MMCRTransform(**args)(image)
    for mine, ref in zip(ours, theirs, strict=True):
        torch.testing.assert_close(
            mine, ref.as_subclass(torch.Tensor), atol=1 / 255 / 0.224 + 1e-6, rtol=0
        )


@pytest.mark.parametrize("k", [0, -1])
def test_bad_k(k: int) -> None:
    with pytest.raises(ValueError, match=f"k must be an int >= 1, got {k}"):
        mmcr_transform.MMCRTransform(k=k)
