from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.transforms.ijepa_transform import IJEPATransform as LightlyIJEPATransform

from fastssl.transforms.ijepa_transform import IJEPATransform
from tests.transforms._images import (
    assert_same_signature,
    assert_same_structure,
    binomial_tolerance,
    crop_box,
    is_hflipped,
    random_pil,
    rate,
    tagged_image,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # lightly's deprecated calls


def test_signature_matches_lightly() -> None:
    assert_same_signature(IJEPATransform, LightlyIJEPATransform)


@pytest.mark.parametrize("as_pil", [False, True])
@pytest.mark.parametrize(
    "kwargs", [{"input_size": 32}, {"input_size": (24, 32), "normalize": None}]
)
def test_structure_matches_lightly(as_pil: bool, kwargs: dict[str, Any]) -> None:
    image: Any = random_pil(40) if as_pil else torch.randint(0, 256, (3, 40, 44)).byte()
    view = IJEPATransform(**kwargs)(image)
    reference = LightlyIJEPATransform(**kwargs)(image)
    # One tensor, not a list (unlike MAE's and CAPI's transforms).
    assert isinstance(view, torch.Tensor) and isinstance(reference, torch.Tensor)
    assert_same_structure([view], [reference])


@pytest.mark.parametrize("input_size", [32, (24, 40)])
@pytest.mark.parametrize("min_scale", [0.2, 0.7])
def test_seeded_views_match_lightly(input_size: int | tuple[int, int], min_scale: float) -> None:
    image = torch.randint(0, 256, (3, 40, 48), generator=torch.Generator().manual_seed(0))
    image = image.to(torch.uint8)
    ours = IJEPATransform(input_size=input_size, min_scale=min_scale)
    theirs = LightlyIJEPATransform(input_size=input_size, min_scale=min_scale)
    for seed in range(5):
        torch.manual_seed(seed)
        view = ours(image)
        torch.manual_seed(seed)
        torch.testing.assert_close(view, theirs(image).as_subclass(torch.Tensor))


def test_spec_crop_scale_and_flip_rate() -> None:
    transform = IJEPATransform(input_size=64, min_scale=0.5, normalize=None)
    (spec,) = transform.view_specs
    assert spec is transform.view_spec
    assert (spec.interpolation, spec.crop_scale, spec.hf_prob) == ("bicubic", (0.5, 1.0), 0.5)
    assert (spec.cj_prob, spec.gray_prob, spec.blur_prob, spec.solarize_prob) == (0, 0, 0, 0)
    assert spec.normalize_mean is None
    torch.manual_seed(0)
    n = 400
    assert abs(rate(is_hflipped, transform, n) - 0.5) <= binomial_tolerance(0.5, n)
    areas = [crop_box(transform(tagged_image()))[0] for _ in range(100)]
    assert min(areas) >= 0.5 - 0.035 and max(areas) > 0.8
