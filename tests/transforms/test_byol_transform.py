from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.transforms.byol_transform import BYOLTransform as LightlyBYOLTransform
from lightly.transforms.byol_transform import BYOLView1Transform as LightlyBYOLView1Transform
from lightly.transforms.byol_transform import BYOLView2Transform as LightlyBYOLView2Transform

from fastssl.transforms.byol_transform import BYOLTransform, BYOLView1Transform, BYOLView2Transform
from tests.transforms._images import assert_same_structure, random_pil


@pytest.mark.parametrize("kwargs", [{"input_size": 32}, {"input_size": 24, "normalize": None}])
def test_structure_matches_lightly(kwargs: dict[str, Any]) -> None:
    image = random_pil(40)
    ours = BYOLTransform(BYOLView1Transform(**kwargs), BYOLView2Transform(**kwargs))(image)
    theirs = LightlyBYOLTransform(
        LightlyBYOLView1Transform(**kwargs), LightlyBYOLView2Transform(**kwargs)
    )(image)
    assert_same_structure(ours, theirs)


def test_default_views_are_asymmetric() -> None:
    spec_1, spec_2 = BYOLTransform().view_specs
    assert (spec_1.blur_prob, spec_1.solarize_prob) == (1.0, 0.0)
    assert (spec_2.blur_prob, spec_2.solarize_prob) == (0.1, 0.2)
    assert spec_1.crop_size == spec_2.crop_size == 224
    assert (spec_1.cj_bright, spec_1.cj_sat, spec_1.cj_hue) == (0.4, 0.2, 0.1)


def test_values_equal_lightly_with_solarization() -> None:
    # Deterministic settings (see test_simclr_transform): grayscale then solarize.
    args = dict(
        input_size=32,
        min_scale=1.0,
        hf_prob=1.0,
        cj_prob=0.0,
        random_gray_scale=1.0,
        gaussian_blur=0.0,
        solarization_prob=1.0,
        normalize=None,
    )
    image = random_pil(32)
    ours = BYOLView2Transform(**args)(image)
    theirs = LightlyBYOLView2Transform(**args)(image).as_subclass(torch.Tensor)
    # Grayscale rounding may differ by one level; solarization can turn it into two.
    torch.testing.assert_close(ours, theirs, atol=2 / 255 + 1e-6, rtol=0)
