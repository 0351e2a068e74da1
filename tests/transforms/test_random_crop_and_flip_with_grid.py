from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from lightly.transforms import random_crop_and_flip_with_grid as lightly_grid
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2

from fastssl.transforms import random_crop_and_flip_with_grid as grid
from tests.transforms._images import (
    assert_same_signature,
    binomial_tolerance,
    random_pil,
    tagged_image,
    to_levels,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # lightly's deprecated calls


def _tensor_image(height: int = 40, width: int = 50) -> Tensor:
    return torch.randint(0, 256, (3, height, width), generator=torch.Generator().manual_seed(1))


def _as_array(image: Tensor | Image.Image) -> np.ndarray:
    return np.asarray(image)


def test_location_fields_match_lightly() -> None:
    def fields(cls: type) -> list[tuple[str, object]]:
        return [(f.name, f.default) for f in dataclasses.fields(cls)]

    assert fields(grid.Location) == fields(lightly_grid.Location)


def test_signatures_and_bases_match_lightly() -> None:
    assert_same_signature(grid.RandomResizedCropAndFlip, lightly_grid.RandomResizedCropAndFlip)
    assert issubclass(grid.RandomResizedCropAndFlip, torch.nn.Module)
    for name, base in [
        ("RandomResizedCropWithLocation", v2.RandomResizedCrop),
        ("RandomHorizontalFlipWithLocation", v2.RandomHorizontalFlip),
        ("RandomVerticalFlipWithLocation", v2.RandomVerticalFlip),
    ]:
        assert issubclass(getattr(grid, name), base)
        assert issubclass(getattr(lightly_grid, name), base)


@pytest.mark.parametrize("as_pil", [False, True])
@pytest.mark.parametrize("scale", [(0.05, 0.2), (0.5, 1.0)])
def test_crop_with_location_matches_lightly(as_pil: bool, scale: tuple[float, float]) -> None:
    image = random_pil(48) if as_pil else _tensor_image()
    ours = grid.RandomResizedCropWithLocation(size=16, scale=scale)
    theirs = lightly_grid.RandomResizedCropWithLocation(size=16, scale=scale)
    for seed in range(10):
        torch.manual_seed(seed)
        view, location = ours(image)
        torch.manual_seed(seed)
        ref_view, ref_location = theirs(image)
        assert dataclasses.astuple(location) == dataclasses.astuple(ref_location)
        assert type(view) is type(ref_view)
        np.testing.assert_array_equal(_as_array(view), _as_array(ref_view))


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
@pytest.mark.parametrize(
    ("name", "field", "dim"),
    [
        ("RandomHorizontalFlipWithLocation", "horizontal_flip", -1),
        ("RandomVerticalFlipWithLocation", "vertical_flip", -2),
    ],
)
def test_flips_match_lightly(p: float, name: str, field: str, dim: int) -> None:
    image = _tensor_image(6, 7)
    ours, theirs = getattr(grid, name)(p=p), getattr(lightly_grid, name)(p=p)
    flips = 0
    for seed in range(40):
        torch.manual_seed(seed)
        view, location = ours(image, grid.Location(1, 2, 6, 7, 10, 12))
        torch.manual_seed(seed)
        ref_view, ref_location = theirs(image, lightly_grid.Location(1, 2, 6, 7, 10, 12))
        assert torch.equal(view, ref_view)
        assert getattr(location, field) == getattr(ref_location, field)
        flipped = getattr(location, field)
        assert torch.equal(view, image.flip(dim) if flipped else image)
        flips += flipped
    assert (flips == 0) if p == 0 else (flips == 40) if p == 1 else (0 < flips < 40)


def test_flip_returns_a_new_location_and_toggles() -> None:
    location = grid.Location(0, 0, 2, 2, 4, 4)
    flip = grid.RandomHorizontalFlipWithLocation(p=1.0)
    image = torch.arange(4).view(1, 2, 2)
    once_image, once = flip(image, location)
    assert location.horizontal_flip is False  # the input is not modified
    twice_image, twice = flip(once_image, once)
    assert once.horizontal_flip is True and twice.horizontal_flip is False
    assert torch.equal(twice_image, image)


@pytest.mark.parametrize("grid_size", [1, 3, 7])
@pytest.mark.parametrize("as_pil", [False, True])
@pytest.mark.parametrize(("hf_prob", "vf_prob"), [(0.5, 0.5), (1.0, 0.0)])
def test_crop_and_flip_matches_lightly(
    grid_size: int, as_pil: bool, hf_prob: float, vf_prob: float
) -> None:
    image = random_pil(48) if as_pil else _tensor_image()
    args = dict(grid_size=grid_size, crop_size=16, hf_prob=hf_prob, vf_prob=vf_prob)
    ours = grid.RandomResizedCropAndFlip(**args)  # type: ignore[arg-type]
    theirs = lightly_grid.RandomResizedCropAndFlip(**args)
    for seed in range(8):
        torch.manual_seed(seed)
        view, points = ours(image)
        torch.manual_seed(seed)
        ref_view, ref_points = theirs(image)
        assert type(view) is type(ref_view)
        np.testing.assert_array_equal(_as_array(view), _as_array(ref_view))
        assert points.shape == ref_points.shape == (grid_size, grid_size, 2)
        assert points.dtype == ref_points.dtype == torch.float32
        torch.testing.assert_close(points, ref_points, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("grid_size", [1, 2, 5])
@pytest.mark.parametrize("horizontal_flip", [False, True])
@pytest.mark.parametrize("vertical_flip", [False, True])
def test_location_to_grid_matches_lightly(
    grid_size: int, horizontal_flip: bool, vertical_flip: bool
) -> None:
    values = dict(top=3.5, left=11.0, height=20.0, width=13.0, image_height=40, image_width=50)
    flags = dict(horizontal_flip=horizontal_flip, vertical_flip=vertical_flip)
    ours = grid.RandomResizedCropAndFlip(grid_size=grid_size).location_to_NxN_grid(
        grid.Location(**values, **flags)  # type: ignore[arg-type]
    )
    theirs = lightly_grid.RandomResizedCropAndFlip(grid_size=grid_size).location_to_NxN_grid(
        lightly_grid.Location(**values, **flags)
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-5)
    # Lightly's convention, written out: N points from left to left + width, + half a cell.
    n = grid_size
    x = 11.0 + 13.0 * (np.linspace(0, 1, n) + 0.5 / n)
    y = 3.5 + 20.0 * (np.linspace(0, 1, n) + 0.5 / n)
    x, y = (x[::-1] if horizontal_flip else x), (y[::-1] if vertical_flip else y)
    np.testing.assert_allclose(ours[..., 0].numpy(), np.tile(x, (n, 1)), rtol=1e-6)
    np.testing.assert_allclose(ours[..., 1].numpy(), np.tile(y[:, None], (1, n)), rtol=1e-6)


def test_grid_follows_the_view_content() -> None:
    # The tagged image's red/green channels are the original column/row: the grid must run in
    # the same direction as the view's content, flipped or not.
    transform = grid.RandomResizedCropAndFlip(
        grid_size=4, crop_size=32, crop_min_scale=0.3, crop_max_scale=1.0
    )
    image = tagged_image()
    torch.manual_seed(0)
    for _ in range(30):
        view, points = transform(image)
        levels = to_levels(v2.functional.to_dtype(view, torch.float32, scale=True))
        view_dx = levels[0, 0, -1] - levels[0, 0, 0]  # column increases to the right?
        view_dy = levels[1, -1, 0] - levels[1, 0, 0]
        grid_dx = points[0, -1, 0] - points[0, 0, 0]
        grid_dy = points[-1, 0, 1] - points[0, 0, 1]
        assert torch.sign(view_dx) == torch.sign(grid_dx)
        assert torch.sign(view_dy) == torch.sign(grid_dy)
        # Every point is inside the image (plus lightly's half-cell overshoot).
        assert points[..., 0].min() >= 0 and points[..., 0].max() <= 64 * (1 + 1 / 8)
        assert points[..., 1].min() >= 0 and points[..., 1].max() <= 64 * (1 + 1 / 8)


def test_flip_rates_and_crop_scale() -> None:
    transform = grid.RandomResizedCropAndFlip(
        grid_size=2, crop_size=8, crop_min_scale=0.1, crop_max_scale=0.3, hf_prob=0.2, vf_prob=0.7
    )
    image = torch.zeros(1, 64, 64, dtype=torch.uint8)
    torch.manual_seed(0)
    n, h_flips, v_flips = 400, 0, 0
    for _ in range(n):
        view, location = transform.resized_crop(image)
        assert 0.1 - 0.05 <= location.width * location.height / 64**2 <= 0.3 + 0.05
        _, location = transform.horizontal_flip(view, location)
        _, location = transform.vertical_flip(view, location)
        h_flips += location.horizontal_flip
        v_flips += location.vertical_flip
    assert abs(h_flips / n - 0.2) <= binomial_tolerance(0.2, n)
    assert abs(v_flips / n - 0.7) <= binomial_tolerance(0.7, n)


def test_bad_grid_size() -> None:
    with pytest.raises(ValueError, match="grid_size must be an int >= 1, got 0"):
        grid.RandomResizedCropAndFlip(grid_size=0)
