from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lightly.data._image import DatasetFolder as LightlyDatasetFolder
from PIL import Image

from fastssl.data._image import DatasetFolder, default_loader
from fastssl.data._image_loaders import default_loader as loaders_default_loader


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.JPG", "c.jpeg", "skip.txt"):
        if name.endswith(".txt"):
            (tmp_path / name).write_text("x")
            continue
        array = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
        Image.fromarray(array).save(tmp_path / name)
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (2, 2)).save(tmp_path / "sub" / "nested.png")  # not listed: flat only
    return tmp_path


EXTENSIONS = (".png", ".jpg", ".jpeg")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(extensions=EXTENSIONS),
        dict(extensions=(".png",)),
        # (lightly lists a directory that is_valid_file accepts: "sub" is not accepted here)
        dict(is_valid_file=lambda path: path.endswith(("g", "G"))),
        dict(extensions=EXTENSIONS, is_valid_file=lambda path: "c." not in path),
    ],
)
def test_matches_lightly(folder: Path, kwargs: dict) -> None:
    ours = DatasetFolder(str(folder), **kwargs)
    theirs = LightlyDatasetFolder(str(folder), **kwargs)
    assert ours.samples == theirs.samples and ours.targets == theirs.targets
    assert len(ours) == len(theirs) > 0
    for index in range(len(ours)):
        (image, target), (their_image, their_target) = ours[index], theirs[index]
        assert target == their_target == 0
        assert np.array_equal(np.asarray(image), np.asarray(their_image))


def test_transforms_and_loader(folder: Path) -> None:
    dataset = DatasetFolder(
        str(folder),
        loader=lambda path: Path(path).name,
        extensions=EXTENSIONS,
        transform=str.upper,
        target_transform=lambda target: target + 7,
    )
    assert [dataset[i] for i in range(len(dataset))] == [("A.JPG", 7), ("B.PNG", 7), ("C.JPEG", 7)]
    assert dataset.extensions == EXTENSIONS
    assert default_loader is loaders_default_loader


def test_no_filter_raises(folder: Path) -> None:
    with pytest.raises(ValueError, match="Both extensions and is_valid_file cannot be None"):
        DatasetFolder(str(folder))


def test_empty_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="Found 0 files in folder"):
        DatasetFolder(str(tmp_path), extensions=(".png",))


def test_directories_are_not_samples(tmp_path: Path) -> None:
    """lightly 1.6 lists a folder named like an image as a sample (and fails to load it)."""
    (tmp_path / "folder.png").mkdir()
    Image.new("RGB", (2, 2)).save(tmp_path / "x.png")
    dataset = DatasetFolder(str(tmp_path), extensions=(".png",))
    assert [Path(p).name for p, _ in dataset.samples] == ["x.png"]
