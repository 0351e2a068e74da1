"""``make_loader``: every backend and source kind gives the same batch structure."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fastssl.data.engines.base import Batch, Loader, SourceKind
from fastssl.data.engines.batched import BatchedViewCollate
from fastssl.data.loader import (
    detect_source,
    make_loader,
    resolve_backend,
    view_specs_of,
)
from fastssl.data.multi_view_collate import MultiViewCollate
from fastssl.data.shards import ShardSettings, convert
from fastssl.transforms.multi_view_transform import MultiViewTransform, ViewTransform
from fastssl.transforms.simclr_transform import SimCLRTransform
from fastssl.transforms.view_spec import ViewSpec

HAS_DALI = importlib.util.find_spec("nvidia.dali") is not None
N = 20  # images: 2 classes of 10


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loader")
    rng = np.random.default_rng(0)
    for index in range(N):
        folder = root / "images" / f"c{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (40 + index, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:03d}.jpg", quality=90)
    convert(root / "images", root / "shards", ShardSettings(max_count=7), workers=1)
    return {"folder": root / "images", "webdataset": root / "shards"}


def _transform() -> SimCLRTransform:
    return SimCLRTransform(input_size=24)


BACKENDS = ["torch", pytest.param("dali", marks=pytest.mark.dali)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["folder", "webdataset"])
def test_batch_structure_shapes_and_dtypes(
    sources: dict[str, Path], backend: str, kind: str
) -> None:
    if backend == "dali" and not HAS_DALI:
        pytest.skip("needs DALI")
    loader = make_loader(
        sources[kind],
        _transform(),
        backend=backend,
        batch_size=8,
        num_workers=1,  # type: ignore[arg-type]
    )
    assert (loader.backend, loader.kind, loader.batch_size, len(loader)) == (backend, kind, 8, 2)
    batches = list(loader)
    assert len(batches) == 2
    names = {p.relative_to(sources["folder"]).as_posix() for p in sources["folder"].rglob("*.jpg")}
    for views, targets, keys in batches:
        assert isinstance(views, list) and len(views) == 2
        for view in views:
            assert view.shape == (8, 3, 24, 24) and view.dtype == torch.float32
            assert torch.isfinite(view).all()
        assert targets.shape == (8,) and targets.dtype == torch.long
        assert set(targets.tolist()) <= {0, 1}
        assert isinstance(keys, list) and len(keys) == 8 and all(isinstance(k, str) for k in keys)
        if kind == "folder":
            assert set(keys) <= names
            # The class folder is the target.
            assert all(int(k[1]) == t for k, t in zip(keys, targets.tolist(), strict=True))
        else:
            assert all(k.isdigit() and int(k) < N for k in keys)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shards_of_a_folder_with_a_gif_train_under_every_backend(
    tmp_path: Path, backend: str
) -> None:
    # DALI's reader stopped with "Underful sample detected" on a .gif member.
    folder = tmp_path / "images" / "c0"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for index in range(6):
        pixels = rng.integers(0, 256, (30, 34, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.{'gif' if index == 2 else 'png'}")
    convert(tmp_path / "images", tmp_path / "shards", ShardSettings(), workers=1)
    loader = make_loader(
        tmp_path / "shards", _transform(), backend=backend, batch_size=3, num_workers=1
    )
    keys = [key for _, _, batch_keys in loader for key in batch_keys]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 6


@pytest.mark.dali
@pytest.mark.parametrize("kind", ["folder", "webdataset"])
def test_dali_shards_by_rank_disjoint_and_complete(sources: dict[str, Path], kind: str) -> None:
    pytest.importorskip("nvidia.dali")
    seen = []
    for rank in (0, 1):
        loader = make_loader(
            sources[kind],
            _transform(),
            backend="dali",
            batch_size=4,
            drop_last=False,
            rank=rank,
            world_size=2,
            num_workers=1,
        )
        assert len(loader) == 3  # 10 samples per rank in batches of 4
        keys = [key for _, _, batch_keys in loader for key in batch_keys]
        assert len(keys) == len(set(keys)) == N // 2
        seen.append(set(keys))
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == N


@pytest.mark.dali
def test_dali_epochs_are_seeded(sources: dict[str, Path]) -> None:
    pytest.importorskip("nvidia.dali")

    def order(epoch: int, seed: int) -> list[str]:
        loader = make_loader(
            sources["folder"], _transform(), backend="dali", batch_size=4, seed=seed, num_workers=1
        )
        loader.set_epoch(epoch)
        return [key for _, _, keys in loader for key in keys]

    assert order(1, seed=0) == order(1, seed=0)
    assert order(1, seed=0) != order(2, seed=0)


@pytest.mark.dali
def test_dali_bfloat16_views(sources: dict[str, Path]) -> None:
    pytest.importorskip("nvidia.dali")
    loader = make_loader(
        sources["folder"], _transform(), backend="dali", batch_size=4, dtype=torch.bfloat16
    )
    views, _, _ = next(iter(loader))
    assert all(view.dtype == torch.bfloat16 for view in views)


class _PerSample:
    """A transform without ViewSpecs (a plain callable)."""

    def __call__(self, image: object) -> object:
        return image


@pytest.mark.parametrize(
    ("backend", "kind", "device", "dali", "transform", "name", "reason", "fallback"),
    [
        ("auto", "folder", "cpu", True, None, "torch", "training on CPU", False),
        ("auto", "webdataset", "cpu", True, None, "torch", "outruns DALI's CPU mode", False),
        ("auto", "webdataset", "cuda", True, None, "dali", "training on a GPU", False),
        ("auto", "folder", "cuda:0", True, None, "dali", "DALI decodes", False),
        ("auto", "webdataset", "cuda", False, None, "torch", "DALI is not installed", True),
        ("auto", "ffcv", "cpu", True, None, "ffcv", "read by FFCV", False),
        ("auto", "ffcv", "cuda", False, None, "ffcv", "read by FFCV", False),
        ("torch", "webdataset", "cuda", True, None, "torch", "was asked for", False),
        ("dali", "folder", "cpu", True, None, "dali", "was asked for", False),
        ("auto", "folder", "cuda", True, _PerSample(), "torch", "no ViewSpecs", True),
        ("auto", "folder", "cpu", True, _PerSample(), "torch", "no ViewSpecs", False),
        ("auto", "folder", "cuda", True, SimCLRTransform(32), "dali", "on a GPU", False),
    ],
    ids=[
        "cpu-folder",
        "cpu-shards",
        "gpu-shards-dali",
        "gpu-folder-dali",
        "gpu-no-dali",
        "cpu-beton",
        "gpu-beton",
        "explicit-torch",
        "explicit-dali",
        "gpu-no-viewspecs",
        "cpu-no-viewspecs",
        "gpu-viewspecs",
    ],
)
def test_backend_choice_by_device_and_source(
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    kind: SourceKind,
    device: str,
    dali: bool,
    transform: object,
    name: str,
    reason: str,
    fallback: bool,
) -> None:
    monkeypatch.setattr("fastssl.data.engines.dali.pipeline.dali_available", lambda: dali)
    choice = resolve_backend(backend, kind, device, transform)
    assert (choice.name, choice.fallback) == (name, fallback)
    assert reason in choice.reason


def test_make_loader_auto_follows_the_device(
    sources: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fastssl.data.engines.dali.pipeline.dali_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loader = make_loader(sources["webdataset"], _transform(), batch_size=4, num_workers=0)
    assert loader.backend == "torch"  # no GPU: the batched torch engine, even with DALI
    monkeypatch.setattr("fastssl.data.engines.dali.pipeline.dali_available", lambda: False)
    with pytest.warns(UserWarning, match="DALI is not installed"):
        loader = make_loader(
            sources["folder"], _transform(), batch_size=4, num_workers=0, device="cuda"
        )
    assert loader.backend == "torch"


def test_bad_backend_names_the_value(sources: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="backend='spark' is unknown: choose one of auto"):
        make_loader(sources["folder"], _transform(), backend="spark")  # type: ignore[arg-type]


def test_missing_data_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        make_loader(tmp_path / "nowhere", _transform(), backend="torch")


def test_beton_with_backend_torch_is_refused(tmp_path: Path) -> None:
    beton = tmp_path / "data.beton"
    beton.write_bytes(b"")
    assert detect_source(beton) == "ffcv"
    with pytest.raises(ValueError, match=r"backend=.torch. cannot read an FFCV \.beton"):
        make_loader(beton, _transform(), backend="torch")


def test_ffcv_backend_refuses_a_folder(sources: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"backend=.ffcv. reads \.beton files, not a folder"):
        make_loader(sources["folder"], _transform(), backend="ffcv")


def test_torch_per_sample_refuses_half_precision_and_batched_gives_it(
    sources: dict[str, Path],
) -> None:
    with pytest.raises(ValueError, match=r"dtype=torch.float16 needs backend='dali' or 'ffcv'"):
        make_loader(
            sources["folder"], _transform(), backend="torch", dtype=torch.float16, batched=False
        )
    loader = make_loader(
        sources["folder"], _transform(), backend="torch", dtype=torch.float16, batch_size=4,
        num_workers=0,
    )  # fmt: skip
    views, _, _ = next(iter(loader))
    assert [v.dtype for v in views] == [torch.float16, torch.float16]


def _batches(loader: Loader, epoch: int) -> list[Batch]:
    loader.set_epoch(epoch)
    return list(loader)


def _same(a: list[Batch], b: list[Batch]) -> bool:
    return all(
        x[2] == y[2] and all(torch.equal(u, v) for u, v in zip(x[0], y[0], strict=True))
        for x, y in zip(a, b, strict=True)
    ) and len(a) == len(b)


@pytest.mark.parametrize("kind", ["folder", "webdataset"])
def test_torch_batches_depend_on_seed_and_epoch_only(sources: dict[str, Path], kind: str) -> None:
    def loader(workers: int, seed: int = 0) -> Loader:
        made = make_loader(
            sources[kind], _transform(), backend="torch", batch_size=4, num_workers=workers,
            seed=seed,
        )  # fmt: skip
        assert isinstance(cast(DataLoader, made._batches).collate_fn, BatchedViewCollate)
        return made

    two = loader(2)  # persistent workers: they must see every set_epoch
    first, second, again = _batches(two, 0), _batches(two, 1), _batches(two, 0)
    assert _same(first, again) and not _same(first, second)
    assert [k for b in first for k in b[2]] != [k for b in second for k in b[2]]  # order
    if kind == "folder":  # the sampler fixes the batches; the seeds fix the augmentations
        assert _same(_batches(loader(0), 1), second)
    assert not _same(_batches(loader(0, seed=1), 0), first)


def test_torch_per_sample_path_and_worker_threads(sources: dict[str, Path]) -> None:
    def threads(image: object) -> list[torch.Tensor]:
        return [torch.tensor([torch.get_num_threads()])]

    loader = make_loader(sources["folder"], threads, backend="torch", batch_size=4, num_workers=2)
    assert isinstance(cast(DataLoader, loader._batches).collate_fn, MultiViewCollate)
    assert {int(n) for views, _, _ in loader for n in views[0]} == {1}
    per_sample = make_loader(
        sources["folder"], _transform(), backend="torch", batch_size=4, num_workers=0,
        batched=False,
    )  # fmt: skip
    views, _, keys = next(iter(per_sample))
    assert [tuple(v.shape) for v in views] == [(4, 3, 24, 24)] * 2 and len(keys) == 4
    with pytest.raises(ValueError, match=r"batched=True needs a transform built from ViewSpecs"):
        make_loader(sources["folder"], threads, backend="torch", batched=True)


def test_view_specs_of_accepts_transforms_and_specs() -> None:
    spec = ViewSpec(crop_size=8)
    assert view_specs_of(spec) == [spec]
    assert view_specs_of([spec, spec]) == [spec, spec]
    assert view_specs_of(ViewTransform(spec)) == [spec]
    assert view_specs_of(MultiViewTransform([ViewTransform(spec)] * 3)) == [spec] * 3
    with pytest.raises(ValueError, match="has no view_specs"):
        view_specs_of(lambda image: image)


def _inode(view: torch.Tensor) -> int:
    fd, _ = view.untyped_storage()._share_fd_cpu_()
    return os.fstat(fd).st_ino


def test_torch_workers_reuse_shared_memory_but_never_a_batch_still_held(
    sources: dict[str, Path],
) -> None:
    loader = make_loader(
        sources["folder"], _transform(), backend="torch", batch_size=4, num_workers=2
    )
    kept, copies = [], []
    for epoch in range(2):  # every batch kept: no slot comes free, nothing is overwritten
        for views, _, _ in _batches(loader, epoch):
            kept.append(views)
            copies.append([v.clone() for v in views])
    for views, clone in zip(kept, copies, strict=True):
        assert all(torch.equal(v, c) for v, c in zip(views, clone, strict=True))
    held = kept[0][1][1:3]  # a view of a tensor keeps its storage, hence its slot, in use
    first = held.clone()
    del kept, copies, views, clone
    dropped = []
    for epoch in range(3):  # batches dropped at once: their shared memory comes back
        loader.set_epoch(epoch)
        dropped += [_inode(views[0]) for views, _, _ in loader]
    assert len(set(dropped)) < len(dropped)
    assert torch.equal(held, first)
