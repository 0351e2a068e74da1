from __future__ import annotations

import pytest
from lightly.transforms import vicreg_transform as lightly_vicreg

from fastssl.transforms import vicreg_transform
from tests.transforms._images import assert_same_signature, assert_same_structure, random_pil


@pytest.mark.parametrize("name", ["VICRegTransform", "VICRegViewTransform"])
def test_signature_matches_lightly(name: str) -> None:
    assert_same_signature(getattr(vicreg_transform, name), getattr(lightly_vicreg, name))


def test_structure_and_specs() -> None:
    image = random_pil(40)
    ours = vicreg_transform.VICRegTransform(input_size=32)
    assert_same_structure(ours(image), lightly_vicreg.VICRegTransform(input_size=32)(image))
    spec = ours.view_specs[0]
    # cj_strength=0.5 multiplied out; solarization 0.1.
    assert (spec.cj_bright, spec.cj_sat, spec.solarize_prob) == (0.4, 0.2, 0.1)
    assert spec.blur_sigmas == (0.1, 2.0)
    assert vicreg_transform.VICRegViewTransform().view_spec.blur_sigmas == (0.2, 2.0)
