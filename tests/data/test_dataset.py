from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightly.data.dataset import LightlyDataset as LightlyLightlyDataset
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fastssl.data.dataset import LightlyDataset, UnreadableImageError
from fastssl.data.multi_view_collate import MultiViewCollate
from fastssl.transforms.simclr_transform import SimCLRTransform


def _save(path: Path, value: int, size: tuple[int, int] = (12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Pixel value encodes which file it is, so tests can check what was loaded.
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


def _flat(root: Path) -> Path:
    for index, name in enumerate(["b.png", "a.jpg", "c.bmp", "d.PNG"]):
        _save(root / name, 40 * index)
    (root / "notes.txt").write_text("not an image")
    return root


def _classes(root: Path) -> Path:
    _save(root / "dogs" / "x.png", 10)
    _save(root / "dogs" / "deeper" / "y.png", 20)
    _save(root / "cats" / "z.jpg", 30)
    _save(root / "cats" / "a.png", 40)
    _save(root / "loose.png", 50)  # files next to class folders are ignored
    return root


@pytest.mark.parametrize("layout", [_flat, _classes])
def test_filenames_targets_and_samples_equal_lightly(tmp_path: Path, layout: object) -> None:
    root = str(layout(tmp_path))  # type: ignore[operator]
    ours, theirs = LightlyDataset(root), LightlyLightlyDataset(root)
    assert len(ours) == len(theirs)
    assert ours.get_filenames() == theirs.get_filenames()
    for index in range(len(ours)):
        sample, target, name = ours[index]
        ref_sample, ref_target, ref_name = theirs[index]
        assert (target, name) == (ref_target, ref_name)
        assert np.array_equal(np.asarray(sample), np.asarray(ref_sample))


def test_class_folder_layout(tmp_path: Path) -> None:
    dataset = LightlyDataset(str(_classes(tmp_path)))
    names = dataset.get_filenames()
    assert names == [
        "cats/a.png",
        "cats/z.jpg",
        "dogs/x.png",
        "dogs/deeper/y.png",
    ]  # walk order, as ImageFolder
    assert [dataset[i][1] for i in range(4)] == [0, 0, 1, 1]
    assert dataset.dataset.classes == ["cats", "dogs"]


def test_filenames_filter_equals_lightly(tmp_path: Path) -> None:
    root = str(_flat(tmp_path))
    wanted = ["c.bmp", "b.png"]
    ours, theirs = (
        LightlyDataset(root, filenames=wanted),
        LightlyLightlyDataset(root, filenames=wanted),
    )
    assert ours.get_filenames() == theirs.get_filenames() == ["b.png", "c.bmp"]


def test_transform_and_index_to_filename(tmp_path: Path) -> None:
    root = str(_flat(tmp_path))
    dataset = LightlyDataset(
        root, transform=SimCLRTransform(input_size=8), index_to_filename=lambda d, i: f"#{i}"
    )
    views, target, name = dataset[2]
    assert [tuple(v.shape) for v in views] == [(3, 8, 8), (3, 8, 8)]
    assert (target, name) == (0, "#2")
    dataset.transform = None
    assert isinstance(dataset[0][0], Image.Image)


_CORRUPTIONS = {
    "garbage": lambda path: path.write_bytes(b"this is not an image"),
    "empty": lambda path: path.write_bytes(b""),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:60]),
}


@pytest.mark.parametrize("kind", sorted(_CORRUPTIONS))
def test_corrupt_file_is_skipped_with_a_warning(tmp_path: Path, kind: str) -> None:
    for index, name in enumerate(["a.png", "b.png", "c.png"]):
        _save(tmp_path / name, 10 * (index + 1), size=(64, 64))
    _CORRUPTIONS[kind](tmp_path / "b.png")
    dataset = LightlyDataset(str(tmp_path))
    assert len(dataset) == 3
    with pytest.warns(UserWarning, match=r"skipping unreadable image '.*b\.png'"):
        sample, _, name = dataset[1]
    # Deterministic substitute: the next readable sample, with its own filename.
    assert name == "c.png" and np.asarray(sample)[0, 0, 0] == 30
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per file
        assert dataset[1][2] == "c.png"
        assert dataset[0][2] == "a.png"
    strict = LightlyDataset(str(tmp_path), strict=True)
    with pytest.raises(UnreadableImageError, match=r"Cannot read image '.*b\.png'"):
        strict[1]


def test_last_corrupt_file_wraps_around(tmp_path: Path) -> None:
    _save(tmp_path / "a.png", 1)
    (tmp_path / "z.png").write_bytes(b"broken")
    with pytest.warns(UserWarning, match=r"z\.png"):
        assert LightlyDataset(str(tmp_path))[1][2] == "a.png"


def test_works_in_dataloader_workers(tmp_path: Path) -> None:
    for index in range(6):
        _save(tmp_path / f"{index}.png", index, size=(16, 16))
    (tmp_path / "3.png").write_bytes(b"broken")
    dataset = LightlyDataset(str(tmp_path), transform=SimCLRTransform(input_size=8))
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=MultiViewCollate())
    names: list[str] = []
    for views, _, batch_names in loader:
        assert [tuple(v.shape) for v in views] == [(2, 3, 8, 8)] * 2
        names += batch_names
    assert sorted(names) == ["0.png", "1.png", "2.png", "4.png", "4.png", "5.png"]
    strict = LightlyDataset(str(tmp_path), transform=SimCLRTransform(input_size=8), strict=True)
    with pytest.raises(Exception, match=r"Cannot read image '.*3\.png'"):
        list(DataLoader(strict, batch_size=2, num_workers=2, collate_fn=MultiViewCollate()))


class _Tensors(Dataset):
    def __init__(self) -> None:
        self.transform = None

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.full((3, 4, 4), index, dtype=torch.uint8)
        return (self.transform(image) if self.transform else image), index + 5


def test_from_torch_dataset_equals_lightly() -> None:
    ours = LightlyDataset.from_torch_dataset(_Tensors(), transform=lambda x: x * 2)
    theirs = LightlyLightlyDataset.from_torch_dataset(_Tensors(), transform=lambda x: x * 2)
    assert ours.get_filenames() == theirs.get_filenames() == ["0", "1", "2"]
    sample, target, name = ours[2]
    assert torch.equal(sample, theirs[2][0]) and (target, name) == (7, "2")


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        LightlyDataset(str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="Found 0 files in folder"):
        LightlyDataset(str(tmp_path))
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(NotImplementedError, match=r"clip\.mp4"):
        LightlyDataset(str(tmp_path))


def test_dump_copies_files(tmp_path: Path) -> None:
    root = _classes(tmp_path / "in")
    LightlyDataset(str(root)).dump(str(tmp_path / "out"), filenames=["cats/a.png", "dogs/x.png"])
    written = sorted(
        os.path.relpath(os.path.join(d, f), tmp_path / "out")
        for d, _, fs in os.walk(tmp_path / "out")
        for f in fs
    )
    assert written == ["cats/a.png", "dogs/x.png"]
    assert (tmp_path / "out" / "cats" / "a.png").read_bytes() == (
        root / "cats" / "a.png"
    ).read_bytes()


# Images as they look (issue 32, item 5): the same helper as the shards.


def _odd_images(root: Path) -> Path:
    from tests.data.test_images import GRADIENT, png16, rotated_jpeg

    root.mkdir(parents=True, exist_ok=True)
    (root / "a_photo.jpg").write_bytes(rotated_jpeg(6, 40, 20))
    (root / "b_depth.png").write_bytes(png16(GRADIENT))
    Image.new("RGB", (5, 3), (9, 8, 7)).save(root / "c_anim.gif")
    return root


@pytest.mark.parametrize("lazy", [False, True])
def test_exif_orientation_and_16bit_like_the_shards(tmp_path: Path, lazy: bool) -> None:
    from fastssl.data.dataset import open_image
    from tests.data.test_images import GRADIENT, quadrant_colours, upright

    dataset = LightlyDataset(str(_odd_images(tmp_path)))
    assert dataset.get_filenames() == ["a_photo.jpg", "b_depth.png", "c_anim.gif"]
    if lazy:  # what a decodes_lazily transform (the batched engine) is handed
        photo, depth = (open_image(str(tmp_path / n)) for n in ("a_photo.jpg", "b_depth.png"))
        photo, depth = photo.convert("RGB"), depth.convert("RGB")
    else:
        photo, depth = dataset[0][0], dataset[1][0]
    assert photo.size == (20, 40)
    assert quadrant_colours(np.asarray(photo)) == quadrant_colours(upright(6, 40, 20))
    np.testing.assert_array_equal(np.asarray(depth)[..., 1], GRADIENT >> 8)
    assert np.asarray(dataset[2][0])[0, 0].tolist() == [9, 8, 7]
