from __future__ import annotations

from pathlib import Path

import pytest
from lightly.data._utils import check_images as lightly_check_images
from PIL import Image

from fastssl.data._utils import check_images


@pytest.mark.parametrize("with_classes", [False, True])
def test_matches_lightly(tmp_path: Path, with_classes: bool) -> None:
    folders = [tmp_path / "cats", tmp_path / "dogs"] if with_classes else [tmp_path]
    for index, folder in enumerate(folders):
        folder.mkdir(exist_ok=True)
        Image.new("RGB", (4, 4)).save(folder / f"good{index}.png")
        Image.new("L", (3, 5)).save(folder / f"good{index}.jpg")
        (folder / f"broken{index}.png").write_bytes(b"not an image at all")
        data = (folder / f"good{index}.jpg").read_bytes()
        (folder / f"truncated{index}.jpg").write_bytes(data[: len(data) // 2])
    healthy, corrupt = check_images(str(tmp_path))
    assert (healthy, corrupt) == lightly_check_images(str(tmp_path))
    prefix = [f"{folder.name}/" if with_classes else "" for folder in folders]
    assert sorted(healthy) == sorted(
        f"{p}good{i}.{ext}" for i, p in enumerate(prefix) for ext in ("png", "jpg")
    )
    assert sorted(corrupt) == sorted(
        f"{p}{name}{i}.{ext}"
        for i, p in enumerate(prefix)
        for name, ext in (("broken", "png"), ("truncated", "jpg"))
    )


def test_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        check_images(str(tmp_path / "missing"))
