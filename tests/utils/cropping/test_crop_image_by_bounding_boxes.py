from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lightly.data import LightlyDataset as LightlyLightlyDataset
from lightly.utils.cropping.crop_image_by_bounding_boxes import (
    crop_dataset_by_bounding_boxes_and_save as lightly_crop,
)
from PIL import Image

from fastssl.data import LightlyDataset
from fastssl.utils.bounding_box import BoundingBox
from fastssl.utils.cropping.crop_image_by_bounding_boxes import (
    crop_dataset_by_bounding_boxes_and_save,
)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name, size, ext in (("a", (20, 10), "png"), ("b", (16, 16), "jpg")):
        array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(array).save(root / f"{name}.{ext}")
    return root


BOXES = [
    [BoundingBox(0.1, 0.2, 0.6, 0.9), BoundingBox(0.0, 0.0, 1.0, 0.5)],
    [BoundingBox(0.25, 0.25, 0.75, 0.75)],
]
CLASSES = [[0, 1], [1]]


@pytest.mark.parametrize("class_names", [None, ["cat", "dog"]])
def test_matches_lightly(image_dir: Path, tmp_path: Path, class_names: list[str] | None) -> None:
    ours = crop_dataset_by_bounding_boxes_and_save(
        LightlyDataset(str(image_dir)), str(tmp_path / "ours"), BOXES, CLASSES, class_names
    )
    theirs = lightly_crop(
        LightlyLightlyDataset(str(image_dir)), str(tmp_path / "theirs"), BOXES, CLASSES, class_names
    )
    assert ours == theirs
    first = "cat" if class_names else "class0"
    assert ours[0][0] == f"a/0_{first}.png"
    for crops in ours:
        for crop in crops:
            mine = np.asarray(Image.open(tmp_path / "ours" / crop))
            other = np.asarray(Image.open(tmp_path / "theirs" / crop))
            assert mine.shape == other.shape and np.array_equal(mine, other)
    # The crop of box (0.1, 0.2, 0.6, 0.9) of the 20 x 10 image is pixels [2:9, 2:12].
    source = np.asarray(Image.open(image_dir / "a.png"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "ours" / ours[0][0])), source[2:9, 2:12])


def test_length_mismatch_raises(image_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one bounding box and class index list"):
        crop_dataset_by_bounding_boxes_and_save(
            LightlyDataset(str(image_dir)), str(tmp_path), BOXES[:1], CLASSES[:1]
        )


def test_inconsistent_image_is_skipped_but_keeps_alignment(image_dir: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="Skipping this image a.png"):
        crops = crop_dataset_by_bounding_boxes_and_save(
            LightlyDataset(str(image_dir)), str(tmp_path), BOXES, [[0], [1]]
        )
    assert crops == [[], ["b/0_class1.jpg"]]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    array = np.zeros((10, 20, 3), dtype=np.uint8)
    array[:, :10] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    Image.fromarray(array).save(root / "r.png", exif=exif)
    (crops,) = crop_dataset_by_bounding_boxes_and_save(
        LightlyDataset(str(root)), str(tmp_path / "out"), [[BoundingBox(0, 0, 1, 0.5)]], [[0]]
    )
    crop = np.asarray(Image.open(tmp_path / "out" / crops[0]))
    # Upright the image is 10 x 20 with the white half on top: the top half is white.
    assert crop.shape == (10, 10, 3) and crop.min() == 255
