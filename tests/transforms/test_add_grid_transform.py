from __future__ import annotations

import pytest
import torch
from lightly.transforms.add_grid_transform import AddGridTransform as LightlyAddGridTransform
from torchvision import tv_tensors
from torchvision.transforms import v2

from fastssl.transforms.add_grid_transform import AddGridTransform
from tests.transforms._images import assert_same_signature

SIZES = [(16, 16), (17, 23), (5, 7)]
GRIDS = [(1, 1), (2, 3), (4, 4), (3, 5)]


def test_signature_and_base() -> None:
    assert_same_signature(AddGridTransform, LightlyAddGridTransform)
    assert isinstance(AddGridTransform(2, 2), v2.Transform)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("leading", [(), (1,), (2,)])
@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.float32])
def test_mask_matches_lightly(
    size: tuple[int, int], grid: tuple[int, int], leading: tuple[int, ...], dtype: torch.dtype
) -> None:
    mask = tv_tensors.Mask(torch.full((*leading, *size), 9, dtype=dtype))
    ours = AddGridTransform(*grid)(mask)
    theirs = LightlyAddGridTransform(*grid)(mask)
    assert type(ours) is tv_tensors.Mask and ours.shape == (1, *size) and ours.dtype == dtype
    assert torch.equal(ours, theirs)


def test_mask_labels_by_hand() -> None:
    # 4 x 6 mask, 2 x 3 grid: row-major labels in 2 x 2 blocks.
    mask = AddGridTransform(num_rows=2, num_cols=3)(tv_tensors.Mask(torch.zeros(4, 6)))
    expected = torch.tensor([[r // 2 * 3 + c // 2 for c in range(6)] for r in range(4)])
    assert torch.equal(mask[0].long(), expected)
    # 5 rows, 2 grid rows: cells of ceil(5 / 2) = 3 rows on a 6-row grid, centred with
    # torchvision's offset round(1 / 2) = 0, so the last row is cut.
    mask = AddGridTransform(num_rows=2, num_cols=1)(tv_tensors.Mask(torch.zeros(5, 1)))
    assert mask.flatten().tolist() == [0, 0, 0, 1, 1]
    # 7 columns, 3 grid columns: 3 x 3 = 9 columns, offset 1: one column cut on each side.
    mask = AddGridTransform(num_rows=1, num_cols=3)(tv_tensors.Mask(torch.zeros(1, 7)))
    assert mask.flatten().tolist() == [0, 0, 1, 1, 1, 2, 2]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("fmt", ["XYXY", "XYWH", "CXCYWH"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
def test_boxes_match_lightly(
    size: tuple[int, int], grid: tuple[int, int], fmt: str, dtype: torch.dtype
) -> None:
    boxes = tv_tensors.BoundingBoxes(torch.zeros(3, 4, dtype=dtype), format=fmt, canvas_size=size)
    ours = AddGridTransform(*grid)(boxes)
    theirs = LightlyAddGridTransform(*grid)(boxes)
    assert type(ours) is tv_tensors.BoundingBoxes
    assert (ours.format, ours.canvas_size, ours.dtype) == (theirs.format, size, dtype)
    assert ours.shape == (grid[0] * grid[1], 4)
    assert torch.equal(ours, theirs)


def test_boxes_by_hand() -> None:
    boxes = tv_tensors.BoundingBoxes(torch.zeros(1, 4), format="XYXY", canvas_size=(4, 6))
    grid = AddGridTransform(num_rows=2, num_cols=3)(boxes)
    # Column-major, as lightly: box index col * num_rows + row.
    expected = [[x0, y0, x0 + 2, y0 + 2] for x0 in (0.0, 2.0, 4.0) for y0 in (0.0, 2.0)]
    assert grid.tolist() == expected


def test_images_and_other_values_pass_through() -> None:
    image = torch.rand(3, 8, 8)
    tv_image = tv_tensors.Image(torch.rand(3, 8, 8))
    sample = {
        "image": tv_image,
        "raw": image,
        "label": 3,
        "masks": [tv_tensors.Mask(torch.zeros(8, 8)), tv_tensors.Mask(torch.ones(1, 8, 8))],
        "boxes": tv_tensors.BoundingBoxes(torch.zeros(2, 4), format="XYXY", canvas_size=(8, 8)),
    }
    out = AddGridTransform(num_rows=2, num_cols=2)(sample)
    assert out["image"] is tv_image and out["raw"] is image and out["label"] == 3
    for mask in out["masks"]:
        assert mask.unique().tolist() == [0, 1, 2, 3]
    assert out["boxes"].shape == (4, 4)
    # A lone pure tensor is an image for v2 transforms: untouched as well.
    assert AddGridTransform(2, 2)(image) is image


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"masks of shape \(\*, H, W\), got shape \(5,\)"):
        AddGridTransform(2, 2)(tv_tensors.Mask(torch.zeros(5)))
    with pytest.raises(ValueError, match="num_rows must be an int >= 1, got 0"):
        AddGridTransform(num_rows=0, num_cols=2)
    with pytest.raises(ValueError, match=r"num_cols must be an int >= 1, got 2\.0"):
        AddGridTransform(num_rows=2, num_cols=2.0)  # type: ignore[arg-type]
