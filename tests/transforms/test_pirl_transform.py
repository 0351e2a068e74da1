from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from lightly.transforms import pirl_transform as lightly_pirl
from torchvision.transforms.v2 import functional as F

from fastssl.transforms import pirl_transform
from fastssl.transforms.jigsaw import Jigsaw
from fastssl.transforms.view_spec import ViewSpec
from tests.transforms._images import assert_same_signature, assert_same_structure, random_pil


def test_signature_matches_lightly() -> None:
    assert_same_signature(pirl_transform.PIRLTransform, lightly_pirl.PIRLTransform)


@pytest.mark.parametrize(
    ("kwargs", "image_size"),
    [
        ({}, 64),
        ({"input_size": 32, "n_grid": 2, "normalize": None}, 40),
        ({"input_size": (24, 36), "n_grid": 3}, 40),
    ],
)
def test_structure_matches_lightly(kwargs: dict[str, Any], image_size: int) -> None:
    image = random_pil(image_size)
    ours = pirl_transform.PIRLTransform(**kwargs)
    theirs = lightly_pirl.PIRLTransform(**kwargs)(image)
    assert_same_structure(ours(image), theirs)
    # lightly fails on tensors (its jigsaw slices (H, W, C)); ours gives the same structure.
    assert_same_structure(ours(F.pil_to_tensor(image)), theirs)


def test_specs_of_the_two_views() -> None:
    transform = pirl_transform.PIRLTransform(
        input_size=48, min_scale=0.3, cj_strength=0.5, hf_prob=0.2, n_grid=4
    )
    crop, jigsaw = transform.transforms
    assert isinstance(jigsaw, Jigsaw)
    assert (jigsaw.n_grid, jigsaw.img_size, jigsaw.crop_size) == (4, 48, 12)
    assert crop.view_spec == ViewSpec(  # type: ignore[attr-defined]
        crop_size=48, crop_scale=(0.3, 1.0), hf_prob=0.0, cj_prob=0.0, gray_prob=0.0, blur_prob=0.0
    )
    assert jigsaw.transform.view_spec == ViewSpec(  # type: ignore[attr-defined]
        crop_size=None,
        hf_prob=0.2,
        cj_bright=0.2,
        cj_contrast=0.2,
        cj_sat=0.2,
        cj_hue=0.2,
        blur_prob=0.0,
    )


def test_values_equal_lightly_when_nothing_is_random() -> None:
    # Full-image crop; every tile flipped and grayscaled; the tiles fill their cells, so only
    # their order is random: each of our tiles must match exactly one of lightly's.
    args = dict(
        input_size=30,
        min_scale=1.0,
        hf_prob=1.0,
        cj_prob=0.0,
        random_gray_scale=1.0,
        normalize={"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]},
    )
    image = random_pil(30)
    view, tiles = pirl_transform.PIRLTransform(**args)(image)
    ref_view, ref_tiles = lightly_pirl.PIRLTransform(**args)(image)
    level = 1 / 255 / 0.2 + 1e-6  # grayscale rounding may differ by one level
    torch.testing.assert_close(view, ref_view.as_subclass(torch.Tensor), atol=level, rtol=0)
    close = [[bool((a - b).abs().max() <= level) for b in ref_tiles] for a in tiles]
    assert (np.array(close).sum(axis=1) == 1).all() and (np.array(close).sum(axis=0) == 1).all()
