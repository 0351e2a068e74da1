from __future__ import annotations

from lightly.transforms.aim_transform import AIMTransform as LightlyAIMTransform

from fastssl.transforms.aim_transform import AIMTransform
from tests.transforms._images import assert_same_signature, assert_same_structure, random_pil


def test_matches_lightly() -> None:
    assert_same_signature(AIMTransform, LightlyAIMTransform)
    image = random_pil(40)
    assert_same_structure(
        AIMTransform(input_size=32)(image), LightlyAIMTransform(input_size=32)(image)
    )
    assert AIMTransform().view_specs[0].crop_scale == (0.4, 1.0)
