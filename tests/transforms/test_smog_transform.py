from __future__ import annotations

import pytest
import torch
from lightly.transforms import smog_transform as lightly_smog
from torchvision.transforms.v2 import functional as F

from fastssl.transforms import smog_transform
from fastssl.transforms.view_spec import ViewSpec
from tests.transforms._images import (
    assert_same_signature,
    assert_same_structure,
    crop_box,
    random_pil,
    tagged_image,
)


@pytest.mark.parametrize("name", ["SMoGTransform", "SmoGViewTransform"])
def test_signature_matches_lightly(name: str) -> None:
    assert_same_signature(getattr(smog_transform, name), getattr(lightly_smog, name))


@pytest.mark.parametrize("counts", [(2, 3), (1, 0)])
def test_structure_matches_lightly(counts: tuple[int, int]) -> None:
    args = dict(crop_sizes=(32, 16), crop_counts=counts)
    image = random_pil(40)
    ours = smog_transform.SMoGTransform(**args)
    theirs = lightly_smog.SMoGTransform(**args)(image)
    assert [v.shape[-1] for v in theirs] == [32] * counts[0] + [16] * counts[1]
    assert_same_structure(ours(image), theirs)
    assert_same_structure(ours(F.pil_to_tensor(image)), theirs)


def test_view_specs_per_category() -> None:
    specs = smog_transform.SMoGTransform(
        crop_counts=(2, 3), gaussian_blur_sigmas=(0.2, 1.0)
    ).view_specs
    assert [s.crop_size for s in specs] == [224] * 2 + [96] * 3
    assert [s.crop_scale for s in specs] == [(0.2, 1.0)] * 2 + [(0.05, 0.2)] * 3
    assert [s.blur_prob for s in specs] == [0.5] * 2 + [0.1] * 3
    assert [s.solarize_prob for s in specs] == [0.0] * 2 + [0.2] * 3
    assert all(s.blur_sigmas == (0.2, 1.0) for s in specs)
    # cj_strength 0.5 multiplies the jitter strengths; color jitter always applied.
    assert specs[0] == ViewSpec(
        crop_size=224,
        crop_scale=(0.2, 1.0),
        cj_prob=1.0,
        cj_bright=0.4,
        cj_contrast=0.4,
        cj_sat=0.2,
        cj_hue=0.1,
        blur_prob=0.5,
        blur_sigmas=(0.2, 1.0),
    )


def test_small_crops_are_small() -> None:
    torch.manual_seed(0)
    transform = smog_transform.SMoGTransform(
        crop_sizes=(64, 64),
        crop_counts=(2, 2),
        cj_prob=0.0,
        random_gray_scale=0.0,
        gaussian_blur_probs=(0.0, 0.0),
        solarize_probs=(0.0, 0.0),
        hf_prob=0.0,
        normalize=None,
    )
    image = tagged_image()
    for _ in range(40):
        views = transform(image)
        assert all(crop_box(v)[0] >= 0.2 - 0.035 for v in views[:2])
        assert all(crop_box(v)[0] <= 0.2 + 0.035 for v in views[2:])


def test_view_values_equal_lightly_with_solarization() -> None:
    args = dict(
        crop_size=32,
        crop_min_scale=1.0,
        hf_prob=1.0,
        cj_prob=0.0,
        random_gray_scale=1.0,
        gaussian_blur_prob=0.0,
        solarize_prob=1.0,
        normalize=None,
    )
    image = random_pil(32)
    ours = smog_transform.SmoGViewTransform(**args)(image)
    theirs = lightly_smog.SmoGViewTransform(**args)(image).as_subclass(torch.Tensor)
    # Grayscale rounding may differ by one level; solarization can turn it into two.
    torch.testing.assert_close(ours, theirs, atol=2 / 255 + 1e-6, rtol=0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"solarize_probs must hold one value per crop size \(2\)"):
        smog_transform.SMoGTransform(solarize_probs=(0.0,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="crop_counts must be an int >= 0, got -1"):
        smog_transform.SMoGTransform(crop_counts=(1, -1))
