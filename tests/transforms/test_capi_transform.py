from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.transforms.capi_transform import CAPITransform as LightlyCAPITransform

from fastssl.transforms.capi_transform import CAPITransform
from fastssl.transforms.mae_transform import MAETransform
from tests.transforms._images import (
    assert_same_signature,
    assert_same_structure,
    crop_box,
    random_pil,
    tagged_image,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # lightly's deprecated calls


def test_signature_matches_lightly() -> None:
    assert_same_signature(CAPITransform, LightlyCAPITransform)


@pytest.mark.parametrize("as_pil", [False, True])
@pytest.mark.parametrize(
    "kwargs", [{"input_size": 32}, {"input_size": (24, 32), "normalize": None}]
)
def test_structure_matches_lightly(as_pil: bool, kwargs: dict[str, Any]) -> None:
    image: Any = random_pil(40) if as_pil else torch.randint(0, 256, (3, 40, 44)).byte()
    views = CAPITransform(**kwargs)(image)
    assert isinstance(views, list) and len(views) == 1
    assert_same_structure(views, LightlyCAPITransform(**kwargs)(image))


@pytest.mark.parametrize("input_size", [32, (24, 40)])
def test_seeded_views_match_lightly(input_size: int | tuple[int, int]) -> None:
    image = torch.randint(0, 256, (3, 40, 48), generator=torch.Generator().manual_seed(0))
    image = image.to(torch.uint8)
    ours, theirs = CAPITransform(input_size=input_size), LightlyCAPITransform(input_size=input_size)
    for seed in range(5):
        torch.manual_seed(seed)
        (view,) = ours(image)
        torch.manual_seed(seed)
        (reference,) = theirs(image)
        torch.testing.assert_close(view, reference.as_subclass(torch.Tensor))


def test_spec_and_crop_scale() -> None:
    transform = CAPITransform(input_size=64, normalize=None)
    assert isinstance(transform, MAETransform)
    (spec,) = transform.view_specs
    assert (spec.interpolation, spec.crop_scale, spec.hf_prob) == ("bicubic", (0.6, 1.0), 0.5)
    assert (spec.cj_prob, spec.gray_prob, spec.blur_prob, spec.solarize_prob) == (0, 0, 0, 0)
    torch.manual_seed(0)
    areas = [crop_box(transform(tagged_image())[0])[0] for _ in range(100)]
    assert min(areas) >= 0.6 - 0.035 and max(areas) > 0.85
