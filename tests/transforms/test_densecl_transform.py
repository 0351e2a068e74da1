from __future__ import annotations

from lightly.transforms.densecl_transform import DenseCLTransform as LightlyDenseCLTransform

from fastssl.transforms.densecl_transform import DenseCLTransform
from fastssl.transforms.moco_transform import MoCoV2Transform
from tests.transforms._images import assert_same_signature, assert_same_structure, random_pil


def test_matches_lightly_and_moco_v2() -> None:
    assert_same_signature(DenseCLTransform, LightlyDenseCLTransform)
    image = random_pil(40)
    assert_same_structure(
        DenseCLTransform(input_size=32)(image), LightlyDenseCLTransform(input_size=32)(image)
    )
    assert DenseCLTransform().view_specs == MoCoV2Transform().view_specs
