from __future__ import annotations

import pytest
from lightly.transforms import moco_transform as lightly_moco

from fastssl.transforms import moco_transform
from tests.transforms._images import assert_same_signature, assert_same_structure, random_pil


@pytest.mark.parametrize("name", ["MoCoV1Transform", "MoCoV2Transform"])
def test_signature_and_structure_match_lightly(name: str) -> None:
    ours, theirs = getattr(moco_transform, name), getattr(lightly_moco, name)
    assert_same_signature(ours, theirs)
    image = random_pil(40)
    assert_same_structure(ours(input_size=32)(image), theirs(input_size=32)(image))


def test_view_specs() -> None:
    v1 = moco_transform.MoCoV1Transform().view_specs[0]
    v2 = moco_transform.MoCoV2Transform().view_specs[0]
    assert (v1.blur_prob, v1.cj_hue, v1.crop_scale) == (0.0, 0.4, (0.2, 1.0))
    assert (v2.blur_prob, v2.cj_hue, v2.crop_scale) == (0.5, 0.1, (0.2, 1.0))
