from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.transforms import vicregl_transform as lightly_vicregl

from fastssl.transforms import vicregl_transform
from fastssl.transforms.image_grid_transform import ImageGridTransform
from fastssl.transforms.random_crop_and_flip_with_grid import RandomResizedCropAndFlip
from tests.transforms._images import (
    assert_same_signature,
    assert_same_structure,
    random_pil,
    tagged_image,
    to_levels,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # lightly's deprecated calls

SMALL = dict(global_crop_size=32, local_crop_size=16)


@pytest.mark.parametrize("name", ["VICRegLTransform", "VICRegLViewTransform"])
def test_signature_matches_lightly(name: str) -> None:
    assert_same_signature(getattr(vicregl_transform, name), getattr(lightly_vicregl, name))


@pytest.mark.parametrize("as_pil", [False, True])
@pytest.mark.parametrize(("n_global_views", "n_local_views"), [(2, 0), (1, 3)])
def test_structure_matches_lightly(as_pil: bool, n_global_views: int, n_local_views: int) -> None:
    image: Any = random_pil(40) if as_pil else torch.randint(0, 256, (3, 40, 44)).byte()
    args: dict[str, Any] = dict(SMALL, n_global_views=n_global_views, n_local_views=n_local_views)
    if not as_pil:
        # lightly 1.6's solarization takes PIL images only: it fails on tensors.
        args["local_solarize_prob"] = 0.0
    ours = vicregl_transform.VICRegLTransform(**args)
    assert isinstance(ours, ImageGridTransform)
    output = ours(image)
    assert_same_structure(output, lightly_vicregl.VICRegLTransform(**args)(image))
    n = n_global_views + n_local_views
    assert [o.shape[-1] for o in output[:n]] == [32] * n_global_views + [16] * n_local_views
    assert [o.shape[0] for o in output[n:]] == [7] * n_global_views + [3] * n_local_views


@pytest.mark.parametrize("seed", [0, 1])
def test_seeded_views_and_grids_match_lightly(seed: int) -> None:
    # With blur and solarization off (lightly draws those from numpy), both draw the same
    # torch random numbers; lightly's local crops always use vf_prob=0.5, so pass that.
    args = dict(
        SMALL,
        n_local_views=2,
        global_gaussian_blur_prob=0.0,
        local_gaussian_blur_prob=0.0,
        local_solarize_prob=0.0,
        vf_prob=0.5,
    )
    image = torch.randint(0, 256, (3, 40, 48), generator=torch.Generator().manual_seed(seed))
    image = image.to(torch.uint8)
    torch.manual_seed(seed)
    ours = vicregl_transform.VICRegLTransform(**args)(image)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    theirs = lightly_vicregl.VICRegLTransform(**args)(image)
    for mine, ref in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, ref.as_subclass(torch.Tensor), rtol=1e-5, atol=1e-5)


def test_tensor_input_with_solarization() -> None:
    transform = vicregl_transform.VICRegLTransform(
        **SMALL, n_local_views=1, global_solarize_prob=1.0, local_solarize_prob=1.0
    )
    output = transform(torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8))
    assert [tuple(o.shape) for o in output] == [(3, 32, 32)] * 2 + [(3, 16, 16)] + [
        (7, 7, 2),
        (7, 7, 2),
        (3, 3, 2),
    ]


def test_view_transform_spec() -> None:
    spec = vicregl_transform.VICRegLViewTransform(cj_strength=1.0, solarize_prob=0.3).view_spec
    assert spec.crop_size is None and spec.hf_prob == 0.0 and spec.vf_prob == 0.0
    assert (spec.cj_prob, spec.cj_bright, spec.cj_sat, spec.cj_hue) == (1.0, 0.8, 0.4, 0.2)
    assert (spec.blur_prob, spec.blur_sigmas, spec.solarize_prob) == (0.5, (0.1, 2.0), 0.3)
    assert spec.gray_prob == 0.2
    view = vicregl_transform.VICRegLViewTransform()(torch.zeros(3, 9, 13, dtype=torch.uint8))
    assert view.shape == (3, 9, 13) and view.dtype == torch.float32


def test_global_and_local_parameters() -> None:
    transform = vicregl_transform.VICRegLTransform(
        n_global_views=1, n_local_views=1, cj_bright=0.2, vf_prob=0.25
    )
    (global_crop, global_view), (local_crop, local_view) = transform.transforms
    assert isinstance(global_crop, RandomResizedCropAndFlip)
    assert isinstance(local_crop, RandomResizedCropAndFlip)
    assert (global_crop.crop_size, global_crop.grid_size) == (224, 7)
    assert (global_crop.crop_min_scale, global_crop.crop_max_scale) == (0.2, 1.0)
    assert (local_crop.crop_size, local_crop.grid_size) == (96, 3)
    assert (local_crop.crop_min_scale, local_crop.crop_max_scale) == (0.05, 0.2)
    # vf_prob and the color strengths reach the local views too (not in lightly 1.6).
    assert global_crop.vf_prob == local_crop.vf_prob == 0.25
    global_spec, local_spec = global_view.view_spec, local_view.view_spec
    assert global_spec.cj_bright == local_spec.cj_bright == 0.1
    assert (global_spec.blur_prob, local_spec.blur_prob) == (0.5, 0.1)
    assert (global_spec.solarize_prob, local_spec.solarize_prob) == (0.0, 0.2)


def test_default_local_views_are_never_flipped_upside_down() -> None:
    transform = vicregl_transform.VICRegLTransform(
        **SMALL, n_global_views=0, n_local_views=2, local_gaussian_blur_prob=0.0
    )
    torch.manual_seed(0)
    image = torch.zeros(3, 40, 40, dtype=torch.uint8)
    for _ in range(40):
        for points in transform(image)[2:]:
            assert (points[1:, :, 1] > points[:-1, :, 1]).all()  # y increases down the rows


def test_grids_follow_their_views() -> None:
    transform = vicregl_transform.VICRegLTransform(
        global_crop_size=32,
        local_crop_size=16,
        n_local_views=2,
        hf_prob=0.5,
        vf_prob=0.5,
        cj_prob=0.0,
        random_gray_scale=0.0,
        global_gaussian_blur_prob=0.0,
        local_gaussian_blur_prob=0.0,
        local_solarize_prob=0.0,
        normalize=None,
    )
    torch.manual_seed(1)
    for _ in range(10):
        output = transform(tagged_image())
        views, grids = output[:4], output[4:]
        for view, points in zip(views, grids, strict=True):
            levels = to_levels(view)
            assert torch.sign(levels[0, 0, -1] - levels[0, 0, 0]) == torch.sign(
                points[0, -1, 0] - points[0, 0, 0]
            )
            assert torch.sign(levels[1, -1, 0] - levels[1, 0, 0]) == torch.sign(
                points[-1, 0, 1] - points[0, 0, 1]
            )


def test_bad_view_counts() -> None:
    with pytest.raises(ValueError, match="n_local_views must be an int >= 0, got -1"):
        vicregl_transform.VICRegLTransform(n_local_views=-1)
    with pytest.raises(ValueError, match=r"n_global_views must be an int >= 0, got 1\.5"):
        vicregl_transform.VICRegLTransform(n_global_views=1.5)  # type: ignore[arg-type]
