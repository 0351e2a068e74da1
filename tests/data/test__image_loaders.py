from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torchvision
from lightly.data import _image_loaders as lightly_loaders
from PIL import Image

from fastssl.data import _image_loaders as loaders


def _save(path: Path, mode: str, size: tuple[int, int] = (7, 5)) -> Path:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(array).convert(mode).save(path)
    return path


@pytest.mark.parametrize(
    ("mode", "ext"), [("RGB", "png"), ("L", "png"), ("RGBA", "png"), ("P", "png"), ("RGB", "jpg")]
)
@pytest.mark.parametrize("name", ["pil_loader", "default_loader"])
def test_same_pixels_as_lightly(tmp_path: Path, mode: str, ext: str, name: str) -> None:
    path = str(_save(tmp_path / f"image.{ext}", mode))
    ours = getattr(loaders, name)(path)
    theirs = getattr(lightly_loaders, name)(path)
    assert isinstance(ours, Image.Image)
    assert ours.mode == theirs.mode == "RGB" and ours.size == theirs.size == (7, 5)
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))


def test_pil_loader_applies_exif_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    Image.new("RGB", (8, 4)).save(tmp_path / "r.png", exif=exif)
    assert loaders.pil_loader(str(tmp_path / "r.png")).size == (4, 8)


def test_pil_loader_raises_for_broken_files(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"not an image")
    with pytest.raises(OSError):
        loaders.pil_loader(str(path))


def test_accimage_loader_without_accimage_raises_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "accimage", None)
    with pytest.raises(ImportError, match="accimage"):
        loaders.accimage_loader(str(_save(tmp_path / "a.png", "RGB")))


def _fake_accimage(fail: bool) -> types.ModuleType:
    module = types.ModuleType("accimage")

    class AccImage:
        def __init__(self, path: str) -> None:
            if fail:
                raise OSError("cannot decode")
            self.path = path

    module.Image = AccImage  # type: ignore[attr-defined]
    return module


@pytest.mark.parametrize("fail", [False, True])
def test_accimage_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool) -> None:
    monkeypatch.setitem(sys.modules, "accimage", _fake_accimage(fail))
    monkeypatch.setattr(torchvision, "get_image_backend", lambda: "accimage")
    path = str(_save(tmp_path / "a.png", "RGB"))
    image = loaders.default_loader(path)
    if fail:  # falls back to PIL
        assert isinstance(image, Image.Image) and image.mode == "RGB"
    else:
        assert type(image).__name__ == "AccImage" and image.path == path
