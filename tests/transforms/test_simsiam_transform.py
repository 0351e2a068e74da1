from __future__ import annotations

import pytest
from lightly.transforms import simsiam_transform as lightly_simsiam

from fastssl.transforms import simsiam_transform
from tests.transforms._images import assert_same_signature, assert_same_structure, random_pil


@pytest.mark.parametrize("name", ["SimSiamTransform", "SimSiamViewTransform"])
def test_signature_matches_lightly(name: str) -> None:
    assert_same_signature(getattr(simsiam_transform, name), getattr(lightly_simsiam, name))


def test_structure_and_specs() -> None:
    image = random_pil(40)
    ours = simsiam_transform.SimSiamTransform(input_size=32, normalize=None)
    theirs = lightly_simsiam.SimSiamTransform(input_size=32, normalize=None)
    assert_same_structure(ours(image), theirs(image))
    spec = ours.view_specs[0]
    assert spec.crop_scale == (0.2, 1.0) and spec.normalize_mean is None
    assert len(ours.view_specs) == 2
