from __future__ import annotations

import pytest
import torch
from lightly.transforms import fast_siam_transform as lightly_fast_siam
from torchvision.transforms.v2 import functional as F

from fastssl.transforms import fast_siam_transform
from fastssl.transforms.simsiam_transform import SimSiamViewTransform
from tests.transforms._images import assert_same_signature, assert_same_structure, random_pil


def test_signature_matches_lightly() -> None:
    assert_same_signature(
        fast_siam_transform.FastSiamTransform, lightly_fast_siam.FastSiamTransform
    )


@pytest.mark.parametrize("num_views", [4, 2, 0])
def test_structure_matches_lightly(num_views: int) -> None:
    image = random_pil(40)
    ours = fast_siam_transform.FastSiamTransform(num_views=num_views, input_size=32)
    theirs = lightly_fast_siam.FastSiamTransform(num_views=num_views, input_size=32)(image)
    assert len(theirs) == num_views
    assert_same_structure(ours(image), theirs)
    assert_same_structure(ours(F.pil_to_tensor(image)), theirs)


def test_views_are_simsiam_views() -> None:
    args = dict(input_size=32, cj_strength=0.5, min_scale=0.3, gaussian_blur=0.1, rr_prob=0.5)
    specs = fast_siam_transform.FastSiamTransform(num_views=3, **args).view_specs
    assert specs == [SimSiamViewTransform(**args).view_spec] * 3
    assert specs[0].crop_scale == (0.3, 1.0) and specs[0].cj_sat == 0.2


def test_values_equal_lightly_when_nothing_is_random() -> None:
    args = dict(
        num_views=2,
        input_size=32,
        min_scale=1.0,
        hf_prob=1.0,
        vf_prob=1.0,
        rr_prob=1.0,
        cj_prob=0.0,
        random_gray_scale=1.0,
        gaussian_blur=0.0,
        normalize=None,
    )
    image = random_pil(32)
    ours = fast_siam_transform.FastSiamTransform(**args)(image)
    theirs = lightly_fast_siam.FastSiamTransform(**args)(image)
    for mine, ref in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, ref.as_subclass(torch.Tensor), atol=1 / 255 + 1e-6, rtol=0)


def test_views_differ_and_seed_reproduces() -> None:
    transform = fast_siam_transform.FastSiamTransform(input_size=32)
    image = random_pil(40)
    torch.manual_seed(0)
    first = transform(image)
    torch.manual_seed(0)
    second = transform(image)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert len({tuple(v.flatten()[:50].tolist()) for v in first}) == 4


def test_bad_num_views() -> None:
    with pytest.raises(ValueError, match="num_views must be an int >= 0, got -1"):
        fast_siam_transform.FastSiamTransform(num_views=-1)
