"""``fastssl profile --loader-only`` without a recipe: measurement, method resolution and
the flat JSON report the loader benchmark reads."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastssl import methods
from fastssl.cli import main
from fastssl.profile.cli import measure_loader, resolve_transform
from fastssl.train.config import PretrainConfig
from fastssl.train.engine import method_kwargs
from fastssl.transforms.dino_transform import DINOTransform
from fastssl.transforms.simclr_transform import SimCLRTransform

HAS_DALI = importlib.util.find_spec("nvidia.dali") is not None


class FakeLoader:
    """Two batches of 3 per epoch; records the epochs it was set to."""

    def __init__(self, per_epoch: int = 2) -> None:
        self.per_epoch, self.epochs = per_epoch, []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __len__(self) -> int:
        return self.per_epoch

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], torch.Tensor, list[str]]]:
        for _ in range(self.per_epoch):
            yield [torch.zeros(3, 1)], torch.zeros(3), ["a", "b", "c"]


def test_measure_loader_excludes_warmup_and_spans_epochs() -> None:
    ticks = iter(range(100))
    loader = FakeLoader()
    # Clock ticks once per call: start, then one per batch.
    images, seconds, times = measure_loader(loader, batches=3, warmup=2, clock=lambda: next(ticks))
    assert images == 9  # 3 measured batches of 3
    assert times == [1, 1, 1] and seconds == 3
    assert loader.epochs == [0, 1, 2]  # 5 batches from epochs of 2


@pytest.mark.parametrize(
    ("batches", "warmup", "message"),
    [(0, 1, "batches=0 must be >= 1"), (1, -1, "warmup=-1 >= 0")],
)
def test_measure_loader_rejects_bad_counts(batches: int, warmup: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        measure_loader(FakeLoader(), batches, warmup)


def test_measure_loader_rejects_an_empty_loader() -> None:
    with pytest.raises(ValueError, match="yields no batch"):
        measure_loader(FakeLoader(per_epoch=0), 1, 0)


def test_resolve_transform_by_method_and_by_class() -> None:
    simclr, origin = resolve_transform("simclr", 32)
    assert isinstance(simclr, SimCLRTransform) and origin == "method"
    assert [spec.crop_size for spec in simclr.view_specs] == [32, 32]
    by_class, origin = resolve_transform("SimCLRTransform", 48)
    assert isinstance(by_class, SimCLRTransform) and origin == "class"
    assert by_class.view_specs[0].crop_size == 48
    dino, _ = resolve_transform("dino", 64)
    assert isinstance(dino, DINOTransform) and dino.view_specs[0].crop_size == 64


@pytest.mark.parametrize("method", methods.list_methods())
def test_every_method_resolves_to_its_own_transform_at_the_size(method: str) -> None:
    """``--loader-only --method M`` loads with what ``fastssl pretrain`` would run: the
    method's own default transform (no table of transforms to drift from it)."""
    transform, origin = resolve_transform(method, 64)
    config = PretrainConfig(method=method)
    config.data.input_size = 64
    built = methods.get(method)(**method_kwargs(config)).default_transform()  # as pretrain
    assert origin == "method" and type(transform) is type(built)
    if not hasattr(built, "view_specs"):  # views with grids or masks (VICRegL, DetCon)
        image = torch.zeros(3, 80, 80, dtype=torch.uint8)
        assert transform(image)[0].shape == built(image)[0].shape == (3, 64, 64)
        return
    assert transform.view_specs == built.view_specs
    assert transform.view_specs[0].crop_size in (64, (64, 64))


@pytest.mark.parametrize("name", ["nosuchmethod", "NoSuchTransform"])
def test_resolve_transform_names_an_unknown_value(name: str) -> None:
    with pytest.raises(ValueError, match=f"--method '{name}'"):
        resolve_transform(name, 32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("profile") / "images"
    rng = np.random.default_rng(0)
    for index in range(12):
        (root / f"c{index % 2}").mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"c{index % 2}" / f"{index}.jpg")
    return root


@pytest.mark.parametrize("backend", ["torch", pytest.param("dali", marks=pytest.mark.dali)])
def test_loader_only_writes_the_report(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    if backend == "dali" and not HAS_DALI:
        pytest.skip("needs DALI")
    report = tmp_path / "loader.json"
    code = main(
        [
            "profile", "--loader-only", "--data", str(folder), "--method", "simclr",
            "--input-size", "32", "--batch-size", "4", "--workers", "1", "--backend", backend,
            "--batches", "4", "--warmup", "1", "--json", str(report),
        ]
    )  # fmt: skip
    assert code == 0
    data = json.loads(report.read_text())
    assert data["backend"] == backend and data["source_kind"] == "folder"
    assert data["loader_images_per_s"] > 0 and data["batches_measured"] == 4
    assert data["views"] == [[3, 32, 32], [3, 32, 32]]
    assert data["transform"] == "SimCLRTransform"
    stages = data["stages"]["loader"]
    assert all(stages[f"{name}_ms"] >= 0 for name in ("read", "decode", "augment"))
    if backend == "dali":  # by ablation: DALI's executor statistics hold no times
        assert stages["executor_statistics"].startswith("unavailable: ")
        assert stages["collate_ms"].startswith("n/a")
    else:
        assert stages["samples"] == 4 and stages["collate_ms"] >= 0
    assert data["compute_images_per_s"] is None and data["bound"] is None
    table = capsys.readouterr().out
    assert "images/s" in table and backend in table


def test_profile_without_a_recipe_or_data_says_what_to_pass(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["profile", "--loader-only", "--backend", "torch"]) == 2
    assert "pass --data PATH" in capsys.readouterr().err


def test_missing_data_is_an_error_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing"
    assert main(["profile", "--loader-only", "--data", str(missing), "--backend", "torch"]) == 2
    assert str(missing) in capsys.readouterr().err
