from __future__ import annotations

import pytest
from lightly.transforms import tico_transform as lightly_tico

from fastssl.transforms import tico_transform
from fastssl.transforms.byol_transform import BYOLTransform
from tests.transforms._images import assert_same_signature, assert_same_structure, random_pil


@pytest.mark.parametrize("name", ["TiCoTransform", "TiCoView1Transform", "TiCoView2Transform"])
def test_signature_matches_lightly(name: str) -> None:
    assert_same_signature(getattr(tico_transform, name), getattr(lightly_tico, name))


def test_structure_and_specs() -> None:
    image = random_pil(40)
    ours = tico_transform.TiCoTransform(
        tico_transform.TiCoView1Transform(input_size=32),
        tico_transform.TiCoView2Transform(input_size=32),
    )
    theirs = lightly_tico.TiCoTransform(
        lightly_tico.TiCoView1Transform(input_size=32),
        lightly_tico.TiCoView2Transform(input_size=32),
    )
    assert_same_structure(ours(image), theirs(image))
    assert ours.view_specs == [s.replace(crop_size=32) for s in BYOLTransform().view_specs]
