from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.transforms.simclr_transform import SimCLRTransform as LightlySimCLRTransform
from lightly.transforms.simclr_transform import (
    SimCLRViewTransform as LightlySimCLRViewTransform,
)
from torchvision.transforms.v2 import functional as F

from fastssl.transforms.simclr_transform import SimCLRTransform, SimCLRViewTransform
from fastssl.transforms.view_spec import ViewSpec
from tests.transforms._images import (
    assert_same_structure,
    binomial_tolerance,
    is_gray,
    is_hflipped,
    random_pil,
    rate,
)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_size": 32},
        {"input_size": 24, "normalize": None, "rr_prob": 0.5, "rr_degrees": 15.0},
        {"input_size": 16, "cj_strength": 0.5, "vf_prob": 0.5, "rr_prob": 1.0},
    ],
)
def test_structure_matches_lightly(kwargs: dict[str, Any]) -> None:
    image = random_pil(40)
    ours = SimCLRTransform(**kwargs)(image)
    assert_same_structure(ours, LightlySimCLRTransform(**kwargs)(image))
    # uint8 tensor input gives the same structure.
    assert_same_structure(SimCLRTransform(**kwargs)(F.pil_to_tensor(image)), ours)


def test_view_spec_holds_the_arguments() -> None:
    transform = SimCLRTransform(input_size=32, cj_strength=0.5, min_scale=0.3, gaussian_blur=0.2)
    spec_0, spec_1 = transform.view_specs
    assert (
        spec_0
        == spec_1
        == SimCLRViewTransform(
            input_size=32, cj_strength=0.5, min_scale=0.3, gaussian_blur=0.2
        ).view_spec
    )
    assert spec_0 == ViewSpec(
        crop_size=32,
        crop_scale=(0.3, 1.0),
        cj_bright=0.4,
        cj_contrast=0.4,
        cj_sat=0.4,
        cj_hue=0.1,
        blur_prob=0.2,
    )


@pytest.mark.parametrize("normalize", [None, {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}])
def test_values_equal_lightly_when_nothing_is_random(normalize: Any) -> None:
    # Full-image crop of a 32 px image to 32 px is the identity; flips, 90-degree rotation and
    # grayscale at probability 1 are deterministic; so lightly and fastssl must agree pixel by
    # pixel (grayscale rounding may differ by one level).
    args = dict(
        input_size=32,
        min_scale=1.0,
        hf_prob=1.0,
        vf_prob=1.0,
        rr_prob=1.0,
        cj_prob=0.0,
        random_gray_scale=1.0,
        gaussian_blur=0.0,
        normalize=normalize,
    )
    image = random_pil(32)
    ours = SimCLRViewTransform(**args)(image)
    theirs = LightlySimCLRViewTransform(**args)(image)
    level = 1 / 255 / (min(normalize["std"]) if normalize else 1.0)
    torch.testing.assert_close(ours, theirs.as_subclass(torch.Tensor), atol=level + 1e-6, rtol=0)


def test_flip_and_gray_rates() -> None:
    torch.manual_seed(0)
    n = 1000
    view = SimCLRViewTransform(
        input_size=64,
        cj_prob=0.0,
        gaussian_blur=0.0,
        normalize=None,
        hf_prob=0.5,
        random_gray_scale=0.2,
    )
    # Tolerance: 4 binomial standard deviations.
    assert abs(rate(is_hflipped, view, n) - 0.5) <= binomial_tolerance(0.5, n)
    assert abs(rate(is_gray, view, n) - 0.2) <= binomial_tolerance(0.2, n)


def test_determinism() -> None:
    transform = SimCLRTransform(input_size=32)
    image = random_pil(40)
    torch.manual_seed(0)
    first = transform(image)
    torch.manual_seed(0)
    second = transform(image)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], first[1])  # the two views differ


def test_bad_argument_names_the_field() -> None:
    with pytest.raises(
        ValueError, match=r"ViewSpec.gray_prob must be a probability in \[0, 1\], got 1.2"
    ):
        SimCLRTransform(random_gray_scale=1.2)
