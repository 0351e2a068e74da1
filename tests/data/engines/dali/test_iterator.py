"""DALI batches from an image folder: the torch engine's order, and bad files survived.

DALI stops its pipeline on a file it cannot read; :class:`DaliBatches` finds the file,
replaces it by the next readable one (as ``LightlyDataset`` does), counts it and goes on
from the first batch not yet delivered.
"""

from __future__ import annotations

import collections
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("nvidia.dali")

from fastssl.data.dataset import UnreadableImageError
from fastssl.data.loader import make_loader
from fastssl.transforms.multi_view_transform import MultiViewTransform, ViewTransform
from fastssl.transforms.view_spec import ViewSpec

pytestmark = pytest.mark.dali

GOOD = 22
SPEC = ViewSpec(crop_size=16, cj_prob=0.0, gray_prob=0.0, blur_prob=0.0)
BAD = {
    "truncated": lambda jpeg: jpeg[: len(jpeg) // 3],
    "empty": lambda jpeg: b"",
    "garbage": lambda jpeg: b"not an image " * 20,
}


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _folder(root: Path, bad: list[str]) -> Path:
    for i in range(GOOD):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{i:03d}.jpg").write_bytes(_jpeg(i))
    for name in bad:
        (root / "class0" / f"{name}.jpg").write_bytes(BAD[name](_jpeg(99)))
    return root


def _keys(root: Path, backend: str, epochs: int = 2, **kwargs: object) -> list[list[str]]:
    loader = make_loader(
        root,
        MultiViewTransform([ViewTransform(SPEC)] * 2),
        backend=backend,  # type: ignore[arg-type]
        batch_size=4,
        num_workers=0 if backend == "torch" else 1,
        drop_last=False,
        seed=5,
        **kwargs,  # type: ignore[arg-type]
    )
    epochs_keys = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        keys: list[str] = []
        for views, targets, batch_keys in loader:
            assert [v.shape[1:] for v in views] == [(3, 16, 16)] * 2
            assert len(targets) == len(batch_keys) == len(views[0])
            keys += batch_keys
        epochs_keys.append(keys)
    return epochs_keys


def test_same_order_as_the_torch_engine(tmp_path: Path) -> None:
    root = _folder(tmp_path / "images", [])
    dali = _keys(root, "dali")
    assert dali == _keys(root, "torch")
    assert dali[0] != dali[1] and sorted(dali[0]) == sorted(dali[1])


@pytest.mark.parametrize("bad", [["truncated"], ["empty"], ["garbage"], list(BAD)])
def test_bad_files_are_replaced_and_counted(tmp_path: Path, bad: list[str]) -> None:
    root = _folder(tmp_path / "images", bad)
    loader_keys: dict[str, list[list[str]]] = {}
    counts = {}
    for backend in ("dali", "torch"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loader = make_loader(
                root, MultiViewTransform([ViewTransform(SPEC)]), backend=backend,  # type: ignore[arg-type]
                batch_size=4, num_workers=0 if backend == "torch" else 1, drop_last=False,
                seed=5,
            )  # fmt: skip
            epochs = []
            for epoch in range(2):
                loader.set_epoch(epoch)
                epochs.append([key for _, _, keys in loader for key in keys])
        loader_keys[backend], counts[backend] = epochs, loader.num_unreadable
        named = {name for name in bad if any(f"{name}.jpg" in str(w.message) for w in caught)}
        assert named == set(bad), backend  # each bad file named in a warning
    # Every readable file once per epoch; each bad one's slot filled by its substitute.
    for keys in loader_keys["dali"]:
        assert len(keys) == GOOD + len(bad)
        seen = collections.Counter(keys)
        assert not any(name in key for key in seen for name in bad)
        assert len(seen) == GOOD and sum(n - 1 for n in seen.values()) == len(bad)
    assert counts == {"dali": len(bad), "torch": len(bad)}
    # Same order and substitutes as the torch engine.
    assert loader_keys["dali"] == loader_keys["torch"]


def test_strict_raises_naming_the_file(tmp_path: Path) -> None:
    root = _folder(tmp_path / "images", ["truncated"])
    with pytest.raises(UnreadableImageError, match=r"truncated\.jpg"):
        _keys(root, "dali", epochs=1, strict=True)
