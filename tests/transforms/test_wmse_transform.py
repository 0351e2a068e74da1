from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.transforms import wmse_transform as lightly_wmse
from torchvision.transforms.v2 import functional as F

from fastssl.transforms import wmse_transform
from fastssl.transforms.view_spec import ViewSpec
from tests.transforms._images import (
    assert_same_signature,
    assert_same_structure,
    binomial_tolerance,
    is_gray,
    is_hflipped,
    random_pil,
    rate,
)


def test_signature_matches_lightly() -> None:
    assert_same_signature(wmse_transform.WMSETransform, lightly_wmse.WMSETransform)


@pytest.mark.parametrize("kwargs", [{"input_size": 32}, {"num_samples": 4, "input_size": 24}])
def test_structure_matches_lightly(kwargs: dict[str, Any]) -> None:
    image = random_pil(40)
    ours = wmse_transform.WMSETransform(**kwargs)
    theirs = lightly_wmse.WMSETransform(**kwargs)(image)
    assert_same_structure(ours(image), theirs)
    assert_same_structure(ours(F.pil_to_tensor(image)), theirs)


def test_view_specs_hold_the_arguments() -> None:
    transform = wmse_transform.WMSETransform(
        num_samples=3, input_size=32, cj_bright=0.3, min_scale=0.5, gaussian_blur=0.2
    )
    expected = ViewSpec(
        crop_size=32,
        crop_scale=(0.5, 1.0),
        interpolation="bicubic",
        cj_bright=0.3,
        cj_contrast=0.4,
        cj_sat=0.4,
        cj_hue=0.1,
        gray_prob=0.1,
        blur_prob=0.2,
    )
    assert transform.view_specs == [expected] * 3


def test_values_equal_lightly_when_nothing_is_random() -> None:
    args = dict(
        input_size=32,
        min_scale=1.0,
        hf_prob=1.0,
        cj_prob=0.0,
        random_gray_scale=1.0,
        gaussian_blur=0.0,
        normalize={"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]},
    )
    image = random_pil(32)
    ours = wmse_transform.WMSETransform(**args)(image)
    theirs = lightly_wmse.WMSETransform(**args)(image)
    for mine, ref in zip(ours, theirs, strict=True):
        torch.testing.assert_close(
            mine, ref.as_subclass(torch.Tensor), atol=1 / 255 / 0.2 + 1e-6, rtol=0
        )


def test_default_flip_and_gray_rates() -> None:
    torch.manual_seed(0)
    n = 600
    view = wmse_transform.WMSETransform(
        input_size=64, cj_prob=0.0, gaussian_blur=0.0, normalize=None
    ).transforms[0]
    assert abs(rate(is_hflipped, view, n) - 0.5) <= binomial_tolerance(0.5, n)
    assert abs(rate(is_gray, view, n) - 0.1) <= binomial_tolerance(0.1, n)


@pytest.mark.parametrize("num_samples", [0, -2])
def test_bad_num_samples(num_samples: int) -> None:
    with pytest.raises(ValueError, match=f"num_samples must be an int >= 1, got {num_samples}"):
        wmse_transform.WMSETransform(num_samples=num_samples)
