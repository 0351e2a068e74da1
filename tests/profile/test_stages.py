"""Per-stage split of the loader (torch path) and the --max-side measurement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastssl.data.loader import make_loader
from fastssl.data.shards import ShardSettings, convert
from fastssl.profile.loader import max_side_speedup, prefetch_depth, torch_stages
from fastssl.transforms import SimCLRTransform
from tests.profile._slow import SleepyTransform
from tests.train._tiny import TinyMethod

STAGES = ("read_ms", "decode_ms", "augment_ms", "collate_ms", "copy_to_device_ms")


@pytest.fixture(scope="module")
def shards(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("profile-shards") / "shards"
    convert(images, root, ShardSettings(max_count=7), workers=1)
    return root


@pytest.mark.parametrize("kind", ["folder", "webdataset"])
def test_torch_stages_time_the_loaders_own_work_and_scale_to_the_batch(
    kind: str, images: Path, shards: Path
) -> None:
    source = str(images if kind == "folder" else shards)
    slow = SleepyTransform(TinyMethod(input_size=8).default_transform(), delay_s=0.01)
    loader = make_loader(source, slow, backend="torch", batch_size=8, num_workers=0)
    stages = torch_stages(loader, source, kind, torch.device("cpu"), samples=4)
    assert stages["samples"] == 4
    assert all(stages[name] >= 0 for name in STAGES)
    # 10 ms of augmentation per image, 8 images per batch, measured on 4 of them. The split
    # subtracts a separately timed decode from the transform's time, so on a loaded machine
    # the estimate can fall a little below the slept 80 ms (78.8 seen): 10% either way.
    assert 72 <= stages["augment_ms"] < 160
    assert stages["augment_ms"] == max(stages[name] for name in STAGES)
    total = sum(stages[name] for name in STAGES)
    assert stages["serial_images_per_s"] == pytest.approx(1000 * 8 / total)


def test_torch_stages_follow_the_batched_engine(images: Path) -> None:
    # A transform built from ViewSpecs: what make_loader's torch engine runs is timed, so
    # the split adds up to the loader's own per-image work, whichever engine that is.
    transform = SimCLRTransform(input_size=16)
    loader = make_loader(str(images), transform, backend="torch", batch_size=8, num_workers=0)
    stages = torch_stages(loader, str(images), "folder", torch.device("cpu"), samples=4)
    assert all(stages[name] >= 0 for name in STAGES) and stages["collate_ms"] > 0
    views, _, _ = next(iter(loader))
    assert [tuple(v.shape) for v in views] == [(8, 3, 16, 16)] * 2


def _big_folder(root: Path, side: int) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for index in range(4):
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{index}.jpg", quality=90)
    return root


def test_max_side_speedup_is_measured_on_big_images_only(tmp_path: Path, images: Path) -> None:
    transform = TinyMethod(input_size=8).default_transform()
    big = _big_folder(tmp_path / "big", 640)
    found = max_side_speedup(transform, str(big), "folder", max_side=64, samples=4)
    assert found is not None and found["median_long_side"] == 640
    assert found["speedup"] > 2  # decoding 100x fewer pixels
    assert max_side_speedup(transform, str(images), "folder", max_side=64) is None  # 40 px


def test_prefetch_depth() -> None:
    class Fake:
        backend = "torch"

    assert prefetch_depth(Fake(), 3) == 6  # type: ignore[arg-type]
    Fake.backend = "dali"
    assert prefetch_depth(Fake(), 3) == 2  # type: ignore[arg-type]
