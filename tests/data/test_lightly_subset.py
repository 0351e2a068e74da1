from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lightly.data import LightlyDataset as LightlyLightlyDataset
from lightly.data.lightly_subset import LightlySubset as LightlyLightlySubset
from PIL import Image

from fastssl.data import LightlyDataset
from fastssl.data.lightly_subset import LightlySubset


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            array = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(array).save(root / cls / f"{i}.png")
    return root


SUBSETS = [["dog/1.png", "cat/0.png"], ["cat/2.png"], [], ["cat/0.png", "cat/1.png", "dog/2.png"]]


@pytest.mark.parametrize("filenames", SUBSETS)
def test_matches_lightly(folder: Path, filenames: list[str]) -> None:
    ours = LightlySubset(LightlyDataset(str(folder)), filenames)
    theirs = LightlyLightlySubset(LightlyLightlyDataset(str(folder)), filenames)
    assert len(ours) == len(theirs) == len(filenames)
    assert ours.get_filenames() == theirs.get_filenames() == filenames
    assert ours.input_dir == theirs.input_dir == str(folder)
    assert (
        ours.mapping_subset_index_to_baseset_index == theirs.mapping_subset_index_to_baseset_index
    )
    for index in range(len(ours)):
        (image, target, name), (their_image, their_target, their_name) = ours[index], theirs[index]
        assert (target, name) == (their_target, their_name)
        assert name == filenames[index] and target == (0 if name.startswith("cat") else 1)
        assert np.array_equal(np.asarray(image), np.asarray(their_image))
        assert ours.index_to_filename(None, index) == theirs.index_to_filename(None, index)
    assert isinstance(ours, LightlyDataset)


def test_transform_and_filepath(folder: Path) -> None:
    base = LightlyDataset(str(folder), transform=lambda image: image.size)
    subset = LightlySubset(base, ["dog/0.png"])
    assert subset[0] == ((4, 4), 1, "dog/0.png")
    assert subset.transform is base.transform
    assert subset.dataset is base.dataset
    assert subset.get_filepath_from_filename("dog/0.png") == str(folder / "dog/0.png")


@pytest.mark.parametrize("filenames", [None, ["cat/1.png", "dog/0.png"]])
def test_dump_writes_the_subset(folder: Path, tmp_path: Path, filenames: list[str] | None) -> None:
    subset = LightlySubset(LightlyDataset(str(folder)), ["dog/2.png", "cat/1.png"])
    subset.dump(str(tmp_path / "out"), filenames=filenames)
    written = sorted(
        str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png")
    )
    assert written == (["cat/1.png", "dog/2.png"] if filenames is None else ["cat/1.png"])
    for name in written:
        assert (tmp_path / "out" / name).read_bytes() == (folder / name).read_bytes()


def test_unknown_filename_raises(folder: Path) -> None:
    with pytest.raises(KeyError, match="not in the base dataset"):
        LightlySubset(LightlyDataset(str(folder)), ["cat/0.png", "bird/0.png"])
