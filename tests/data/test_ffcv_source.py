"""Tests of ``fastssl shards --format ffcv`` and fastssl.data.ffcv_source (needs FFCV)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastssl.data.ffcv_source import beton_path, ffcv_loader
from fastssl.data.shards import ShardSettings, convert


def _flat_folder(root: Path, n: int) -> Path:
    """n 16x16 images of one flat colour each (JPEG keeps flat colours): R = 8 * index."""
    for i in range(n):
        folder = root / f"c{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (8 * i, 100, 50)).save(folder / f"{i}.png")
    return root


@pytest.mark.ffcv
def test_ffcv_holds_the_same_samples_and_labels(tmp_path: Path) -> None:
    pytest.importorskip("ffcv")
    n = 23
    src = _flat_folder(tmp_path / "src", n)
    (src / "c0" / "broken.png").write_bytes(b"\x89PNG broken")
    manifest = convert(src, tmp_path / "dst", ShardSettings(format="ffcv"), workers=1)
    assert manifest["num_samples"] == n and manifest["shards"][0]["file"] == "dataset.beton"
    assert [s["path"] for s in manifest["skipped"]] == ["c0/broken.png"]
    assert json.loads((tmp_path / "dst" / "manifest.json").read_text()) == manifest
    seen = []
    for images, labels in ffcv_loader(tmp_path / "dst", batch_size=5, num_workers=1):
        assert images.shape[1:] == (3, 16, 16) and images.dtype.__str__() == "torch.uint8"
        for image, label in zip(images.numpy(), labels.tolist(), strict=True):
            index = round(float(np.mean(image[0])) / 8)
            assert label == index % 3
            seen.append(index)
    assert sorted(seen) == list(range(n))
    with pytest.raises(ValueError, match="batch_size=0"):
        ffcv_loader(tmp_path / "dst", batch_size=0)


def test_beton_path_refuses_other_formats(tmp_path: Path) -> None:
    convert(_flat_folder(tmp_path / "src", 3), tmp_path / "dst", ShardSettings(), workers=1)
    with pytest.raises(ValueError, match="holds format 'webdataset'"):
        beton_path(tmp_path / "dst")
    with pytest.raises(FileNotFoundError, match=r"manifest\.json not found"):
        beton_path(tmp_path)
