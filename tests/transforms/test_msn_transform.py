from __future__ import annotations

import pytest
from lightly.transforms import msn_transform as lightly_msn

from fastssl.transforms import msn_transform
from tests.transforms._images import assert_same_signature, assert_same_structure, random_pil


@pytest.mark.parametrize("name", ["MSNTransform", "MSNViewTransform"])
def test_signature_matches_lightly(name: str) -> None:
    assert_same_signature(getattr(msn_transform, name), getattr(lightly_msn, name))


def test_structure_matches_lightly() -> None:
    args = dict(random_size=32, focal_size=16, random_views=2, focal_views=3)
    image = random_pil(40)
    ours = msn_transform.MSNTransform(**args)(image)
    assert [v.shape[-1] for v in ours] == [32, 32, 16, 16, 16]
    assert_same_structure(ours, lightly_msn.MSNTransform(**args)(image))


def test_view_specs() -> None:
    specs = msn_transform.MSNTransform(cj_bright=0.3).view_specs
    assert [s.crop_size for s in specs] == [224] * 2 + [96] * 10
    assert [s.crop_scale for s in specs] == [(0.3, 1.0)] * 2 + [(0.05, 0.3)] * 10
    assert all(s.cj_bright == 0.3 for s in specs)  # focal views too (lightly drops it)
    with pytest.raises(ValueError, match="focal_views must be an int >= 0, got -2"):
        msn_transform.MSNTransform(focal_views=-2)
