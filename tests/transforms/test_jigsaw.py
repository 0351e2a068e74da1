from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from lightly.transforms.jigsaw import Jigsaw as LightlyJigsaw
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from fastssl.transforms.jigsaw import Jigsaw
from fastssl.transforms.torchvision_v2_compatibility import ToTensor
from tests.transforms._images import (
    TAG_STEP,
    binomial_tolerance,
    random_pil,
    tagged_image,
    to_levels,
)


def test_signature_matches_lightly() -> None:
    ours = inspect.signature(Jigsaw.__init__).parameters
    theirs = inspect.signature(LightlyJigsaw.__init__).parameters
    assert list(ours) == list(theirs)
    for name in ("n_grid", "img_size", "crop_size"):
        assert ours[name].default == theirs[name].default
    assert isinstance(ours["transform"].default, ToTensor)


@pytest.mark.parametrize(
    ("n_grid", "img_size", "crop_size"), [(3, 30, 10), (2, 40, 12), (3, 255, 64)]
)
def test_structure_matches_lightly(n_grid: int, img_size: int, crop_size: int) -> None:
    image = random_pil(max(img_size, 32))
    ours = Jigsaw(n_grid, img_size, crop_size)
    theirs = LightlyJigsaw(n_grid, img_size, crop_size, transform=ToTensor())(image)
    for result in (ours(image), ours(F.pil_to_tensor(image))):
        assert result.shape == theirs.shape == (n_grid**2, 3, crop_size, crop_size)
        assert result.dtype == theirs.dtype


@pytest.mark.parametrize("n_grid", [2, 3])
def test_tiles_equal_lightlys_up_to_order(n_grid: int) -> None:
    # crop_size == grid size: no random offset, so the tiles are fixed and only their order
    # is random; each of our tiles must be one of lightly's, each exactly once.
    size = 30
    image = random_pil(36)
    ours = Jigsaw(n_grid, size, size // n_grid)(image)
    theirs = LightlyJigsaw(n_grid, size, size // n_grid, transform=ToTensor())(image)
    matches = [[torch.equal(a, b) for b in theirs] for a in ours]
    assert (np.array(matches).sum(axis=1) == 1).all()
    assert (np.array(matches).sum(axis=0) == 1).all()


def test_pil_and_tensor_inputs_give_the_same_tiles() -> None:
    image = random_pil(40)
    jigsaw = Jigsaw(n_grid=3, img_size=39, crop_size=9)
    torch.manual_seed(3)
    from_pil = jigsaw(image)
    torch.manual_seed(3)
    from_tensor = jigsaw(F.pil_to_tensor(image))
    assert torch.equal(from_pil, from_tensor)


def test_tiles_lie_in_their_cells_with_uniform_offsets_and_order() -> None:
    # The tagged image encodes (column, row) in its red/green levels, so each tile's
    # top-left pixel tells where it was cut.
    torch.manual_seed(0)
    n_grid, grid, crop = 3, 21, 15
    jigsaw = Jigsaw(n_grid=n_grid, img_size=63, crop_size=crop)
    image = tagged_image()
    draws = 300
    offsets, first_cell_position = [], []
    for _ in range(draws):
        levels = to_levels(jigsaw(image))
        lefts = (levels[:, 0, 0, 0] // TAG_STEP).tolist()
        tops = (levels[:, 1, 0, 0] // TAG_STEP).tolist()
        cells = [
            (top // grid) * n_grid + left // grid for top, left in zip(tops, lefts, strict=True)
        ]
        assert sorted(cells) == list(range(n_grid**2))  # one tile per cell
        offsets += [top % grid for top in tops] + [left % grid for left in lefts]
        first_cell_position.append(cells.index(0))
    counts = np.bincount(offsets, minlength=grid)
    assert counts[grid - crop + 1 :].sum() == 0  # offsets stay in [0, grid - crop]
    n = len(offsets)
    expected = 1 / (grid - crop + 1)
    assert np.all(
        np.abs(counts[: grid - crop + 1] / n - expected) <= binomial_tolerance(expected, n)
    )
    # Shuffled: cell 0's tile lands at each position with probability 1 / 9.
    positions = np.bincount(first_cell_position, minlength=n_grid**2) / draws
    assert np.all(np.abs(positions - 1 / 9) <= binomial_tolerance(1 / 9, draws))


def test_transform_is_applied_per_tile() -> None:
    calls = []

    def record(tile: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(tile.shape))
        return v2.functional.to_dtype(tile, torch.float32, scale=True)

    Jigsaw(n_grid=2, img_size=20, crop_size=8, transform=record)(tagged_image())
    assert calls == [(3, 8, 8)] * 4


def test_bad_arguments_and_small_images() -> None:
    with pytest.raises(
        ValueError, match=r"crop_size must be in \[1, img_size // n_grid\] = \[1, 10\], got 11"
    ):
        Jigsaw(n_grid=3, img_size=30, crop_size=11)
    with pytest.raises(ValueError, match="n_grid must be an int >= 1, got 0"):
        Jigsaw(n_grid=0)
    with pytest.raises(ValueError, match=r"at least 63x63 pixels .* got 40x40"):
        Jigsaw(n_grid=3, img_size=64, crop_size=21)(random_pil(40))
