from __future__ import annotations

import pytest
import torch
from lightly.transforms import dino_transform as lightly_dino

from fastssl.transforms import dino_transform
from tests.transforms._images import (
    assert_same_signature,
    assert_same_structure,
    crop_box,
    random_pil,
    tagged_image,
)


@pytest.mark.parametrize("name", ["DINOTransform", "DINOViewTransform"])
def test_signature_matches_lightly(name: str) -> None:
    assert_same_signature(getattr(dino_transform, name), getattr(lightly_dino, name))


@pytest.mark.parametrize("n_local_views", [0, 3])
def test_structure_matches_lightly(n_local_views: int) -> None:
    args = dict(global_crop_size=32, local_crop_size=16, n_local_views=n_local_views)
    image = random_pil(40)
    ours = dino_transform.DINOTransform(**args)(image)
    assert len(ours) == 2 + n_local_views
    assert_same_structure(ours, lightly_dino.DINOTransform(**args)(image))


def test_view_specs_per_view() -> None:
    specs = dino_transform.DINOTransform(cj_strength=1.0, n_local_views=2).view_specs
    assert [s.blur_prob for s in specs] == [1.0, 0.1, 0.5, 0.5]
    assert [s.solarize_prob for s in specs] == [0.0, 0.2, 0.0, 0.0]
    assert [s.crop_size for s in specs] == [224, 224, 96, 96]
    assert [s.crop_scale for s in specs] == [(0.4, 1.0)] * 2 + [(0.05, 0.4)] * 2
    assert all(s.interpolation == "bicubic" for s in specs)
    # cj_strength reaches every view (lightly 1.6 drops it for global view 1).
    assert [s.cj_bright for s in specs] == [0.8] * 4


def test_local_crops_are_small() -> None:
    torch.manual_seed(0)
    transform = dino_transform.DINOTransform(
        global_crop_size=64,
        local_crop_size=64,
        n_local_views=4,
        cj_prob=0.0,
        random_gray_scale=0.0,
        gaussian_blur=(0.0, 0.0, 0.0),
        solarization_prob=0.0,
        hf_prob=0.0,
        normalize=None,
    )
    image = tagged_image()
    for _ in range(50):
        views = transform(image)
        assert all(crop_box(v)[0] >= 0.4 - 0.035 for v in views[:2])
        assert all(crop_box(v)[0] <= 0.4 + 0.035 for v in views[2:])


def test_bad_arguments() -> None:
    with pytest.raises(
        ValueError, match=r"gaussian_blur must hold 3 probabilities .* got \(1.0, 0.5\)"
    ):
        dino_transform.DINOTransform(gaussian_blur=(1.0, 0.5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_local_views must be an int >= 0, got -1"):
        dino_transform.DINOTransform(n_local_views=-1)
