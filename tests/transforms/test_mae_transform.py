from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.transforms.mae_transform import MAETransform as LightlyMAETransform

from fastssl.transforms.mae_transform import MAETransform
from tests.transforms._images import (
    assert_same_signature,
    assert_same_structure,
    binomial_tolerance,
    is_hflipped,
    random_pil,
    rate,
)


@pytest.mark.parametrize(
    "kwargs", [{"input_size": 32}, {"input_size": (24, 32), "normalize": None}]
)
def test_structure_matches_lightly(kwargs: dict[str, Any]) -> None:
    assert_same_signature(MAETransform, LightlyMAETransform)
    image = random_pil(40)
    assert_same_structure(MAETransform(**kwargs)(image), LightlyMAETransform(**kwargs)(image))


def test_spec_and_flip_rate() -> None:
    transform = MAETransform(input_size=64, min_scale=0.5, normalize=None)
    (spec,) = transform.view_specs
    assert (spec.interpolation, spec.crop_scale, spec.hf_prob) == ("bicubic", (0.5, 1.0), 0.5)
    assert (spec.cj_prob, spec.gray_prob, spec.blur_prob) == (0.0, 0.0, 0.0)
    torch.manual_seed(0)
    n = 600
    flip_rate = rate(lambda views: is_hflipped(views[0]), transform, n)
    assert abs(flip_rate - 0.5) <= binomial_tolerance(0.5, n)
