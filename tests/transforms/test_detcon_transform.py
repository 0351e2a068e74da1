from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from lightly.transforms import detcon_transform as lightly_detcon
from torch import Tensor
from torchvision import tv_tensors

from fastssl.transforms import detcon_transform
from tests.transforms._images import assert_same_signature, random_pil

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # lightly's deprecated calls

# Every step with a probability > 0, so both draw the same torch random numbers.
ALL_STEPS = dict(
    input_size=32,
    vf_prob=0.5,
    rr_prob=0.5,
    rr_degrees=30.0,
    gaussian_blur_t1=0.7,
    gaussian_blur_t2=0.4,
)


def _image(seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, 40, 48), generator=generator).to(torch.uint8)


def _mask(seed: int = 0) -> tv_tensors.Mask:
    generator = torch.Generator().manual_seed(seed + 100)
    return tv_tensors.Mask(torch.randint(0, 5, (1, 40, 48), generator=generator))


def _segment(image: Any) -> Tensor:
    """A (H, W) segmentation: image rows split in halves (picklable, module level)."""
    height = image.shape[-2] if isinstance(image, Tensor) else image.height
    width = image.shape[-1] if isinstance(image, Tensor) else image.width
    return (torch.arange(height)[:, None] >= height // 2).long().expand(height, width)


def _assert_views_equal(ours: list[Any], theirs: list[Any]) -> None:
    assert len(ours) == len(theirs) == 2
    for (image, mask), (ref_image, ref_mask) in zip(ours, theirs, strict=True):
        assert type(image) is type(ref_image) is tv_tensors.Image
        assert type(mask) is type(ref_mask) is tv_tensors.Mask
        assert image.dtype == ref_image.dtype == torch.float32
        assert mask.dtype == ref_mask.dtype
        torch.testing.assert_close(image, ref_image, rtol=1e-5, atol=1e-5)
        assert torch.equal(mask, ref_mask)


@pytest.mark.parametrize("name", ["DetConSTransform", "DetConSViewTransform"])
def test_signature_matches_lightly(name: str) -> None:
    assert_same_signature(getattr(detcon_transform, name), getattr(lightly_detcon, name))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_seeded_views_match_lightly(seed: int) -> None:
    image, mask = _image(seed), _mask(seed)
    torch.manual_seed(seed)
    ours = detcon_transform.DetConSTransform(**ALL_STEPS)(image, mask)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    theirs = lightly_detcon.DetConSTransform(**ALL_STEPS)(image, mask)
    _assert_views_equal(ours, theirs)


@pytest.mark.parametrize("grid_size", [(2, 2), (3, 4)])
def test_seeded_grid_views_match_lightly(grid_size: tuple[int, int]) -> None:
    args = dict(ALL_STEPS, grid_size=grid_size)
    torch.manual_seed(5)
    ours = detcon_transform.DetConSTransform(**args)(_image(), _mask())  # type: ignore[arg-type]
    torch.manual_seed(5)
    theirs = lightly_detcon.DetConSTransform(**args)(_image(), _mask())
    _assert_views_equal(ours, theirs)
    # The placeholder mask is replaced by the grid before cropping: labels are grid cells.
    for _, mask in ours:
        assert set(mask.unique().tolist()) <= set(range(grid_size[0] * grid_size[1]))


def test_seeded_mask_fn_views_match_lightly() -> None:
    args = dict(ALL_STEPS, mask_fn=_segment)
    torch.manual_seed(7)
    ours = detcon_transform.DetConSTransform(**args)(_image())  # type: ignore[arg-type]
    torch.manual_seed(7)
    theirs = lightly_detcon.DetConSTransform(**args)(_image())
    _assert_views_equal(ours, theirs)
    assert all(mask.shape == (1, 32, 32) for _, mask in ours)


def test_mask_fn_is_called_once_and_gets_a_channel() -> None:
    calls = []

    def segment(image: Any) -> Tensor:
        calls.append(image)
        return _segment(image)

    transform = detcon_transform.DetConSTransform(
        mask_fn=segment, input_size=40, min_scale=1.0, hf_prob=0.0
    )
    image = random_pil(40)
    views = transform(image)
    assert len(calls) == 1 and calls[0] is image
    # Whole-image crops without flips: both views carry the unchanged (1, H, W) mask.
    for _, mask in views:
        assert mask.shape == (1, 40, 40)
        assert torch.equal(mask[0], _segment(image))


@pytest.mark.parametrize("as_pil", [False, True])
def test_structure_matches_lightly(as_pil: bool) -> None:
    image: Any = random_pil(40) if as_pil else _image()
    mask = tv_tensors.Mask(torch.zeros(1, 40, 40 if as_pil else 48, dtype=torch.uint8))
    ours = detcon_transform.DetConSTransform(input_size=(24, 32))(image, mask)
    theirs = lightly_detcon.DetConSTransform(input_size=(24, 32))(image, mask)
    for (view, view_mask), (ref, ref_mask) in zip(ours, theirs, strict=True):
        assert type(view) is type(ref) and type(view_mask) is type(ref_mask)
        assert view.shape == ref.shape == (3, 24, 32) and view.dtype == ref.dtype
        assert view_mask.shape == ref_mask.shape and view_mask.dtype == ref_mask.dtype
    # A dict sample keeps its structure.
    sample = {"image": image, "mask": mask, "id": 7}
    out = detcon_transform.DetConSViewTransform(input_size=16)(sample)
    assert set(out) == {"image", "mask", "id"} and out["id"] == 7
    assert out["image"].shape == (3, 16, 16) and out["mask"].shape == (1, 16, 16)


def test_default_blur_only_in_view_one() -> None:
    # Whole-image crop, no flip, no color: view 1 is always blurred (t1=1.0), view 2 never
    # (t2=0.0), so view 2 is the input itself and view 1 is smoother.
    transform = detcon_transform.DetConSTransform(
        input_size=40,
        min_scale=1.0,
        hf_prob=0.0,
        cj_prob=0.0,
        random_gray_scale=0.0,
        sigmas=(1.0, 2.0),  # visibly blurred every time
        normalize=None,
    )
    image = torch.from_numpy(np.asarray(random_pil(40))).permute(2, 0, 1).contiguous()
    mask = tv_tensors.Mask(torch.zeros(1, 40, 40, dtype=torch.int64))
    expected = image.float() / 255
    torch.manual_seed(0)
    for _ in range(5):
        (view_1, _), (view_2, _) = transform(image, mask)
        torch.testing.assert_close(view_2.as_subclass(Tensor), expected)
        assert view_1.diff(dim=-1).abs().mean() < 0.8 * expected.diff(dim=-1).abs().mean()


def test_grid_size_and_mask_fn_are_exclusive() -> None:
    with pytest.raises(ValueError, match="grid_size and mask_fn are mutually exclusive"):
        detcon_transform.DetConSTransform(grid_size=(2, 2), mask_fn=_segment)
    with pytest.raises(ValueError, match=r"grid_size must be \(num_rows, num_cols\)"):
        detcon_transform.DetConSTransform(grid_size=(2,))  # type: ignore[arg-type]


def test_is_a_multi_view_transform_v2() -> None:
    from fastssl.transforms.multi_view_transform_v2 import MultiViewTransformV2

    transform = detcon_transform.DetConSTransform(grid_size=(2, 3))
    assert isinstance(transform, MultiViewTransformV2) and len(transform.transforms) == 2
    assert (transform.grid_size, transform.mask_fn) == ((2, 3), None)
