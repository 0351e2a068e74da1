from __future__ import annotations

import pytest
from lightly.transforms import swav_transform as lightly_swav

from fastssl.transforms import swav_transform
from tests.transforms._images import assert_same_signature, assert_same_structure, random_pil


@pytest.mark.parametrize("name", ["SwaVTransform", "SwaVViewTransform"])
def test_signature_matches_lightly(name: str) -> None:
    assert_same_signature(getattr(swav_transform, name), getattr(lightly_swav, name))


def test_structure_matches_lightly() -> None:
    args = dict(crop_sizes=(32, 16), crop_counts=(2, 4))
    image = random_pil(40)
    ours = swav_transform.SwaVTransform(**args)(image)
    assert [v.shape[-1] for v in ours] == [32, 32, 16, 16, 16, 16]
    assert_same_structure(ours, lightly_swav.SwaVTransform(**args)(image))


def test_view_specs_carry_the_crops() -> None:
    specs = swav_transform.SwaVTransform().view_specs
    assert [s.crop_size for s in specs] == [224] * 2 + [96] * 6
    assert [s.crop_scale for s in specs] == [(0.14, 1.0)] * 2 + [(0.05, 0.14)] * 6
    assert swav_transform.SwaVViewTransform().view_spec.crop_size is None
    assert all(
        s.replace(crop_size=None, crop_scale=(0.08, 1.0))
        == swav_transform.SwaVViewTransform().view_spec
        for s in specs
    )
