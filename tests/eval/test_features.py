from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import functional as F

from fastssl.data.shards import ShardSettings, convert
from fastssl.eval.features import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NonFiniteFeaturesError,
    PixelFeatures,
    class_mapping,
    eval_transform,
    extract_features,
    open_labeled,
)
from tests.eval.conftest import make_folder


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[
        :, None, None
    ]


def test_small_inputs_are_resized_to_a_square() -> None:
    image = Image.effect_noise((40, 30), 50).convert("RGB")
    out = eval_transform(32)(image)
    expected = _normalize(F.to_tensor(image.resize((32, 32), Image.BILINEAR)))
    assert out.shape == (3, 32, 32)
    torch.testing.assert_close(out, expected, atol=0.02, rtol=0)  # antialias differs slightly


def test_large_inputs_keep_aspect_and_center_crop() -> None:
    # Left half black, right half white, 200x100: short side -> 96, width -> 192; the
    # 96 px center crop spans columns 48..143 of the resized image, half black, half white.
    image = Image.new("RGB", (200, 100))
    image.paste((255, 255, 255), (100, 0, 200, 100))
    out = eval_transform(96)(image)
    assert out.shape == (3, 96, 96)
    raw = (
        out * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    )
    assert raw[:, :, :40].max() < 0.05 and raw[:, :, 56:].min() > 0.95


@pytest.mark.parametrize(("size", "resize"), [(96, 128), (32, 40), (32, 32)])
def test_resize_then_center_crop(size: int, resize: int) -> None:
    # 200x100 with a white right half: short side -> resize, width -> 2 x resize; the center
    # crop of `size` spans columns resize - size/2 .. resize + size/2: half black, half white.
    image = Image.new("RGB", (200, 100))
    image.paste((255, 255, 255), (100, 0, 200, 100))
    out = eval_transform(size, resize=resize)(image)
    assert out.shape == (3, size, size)
    expected = F.center_crop(F.resize(F.to_tensor(image), resize), [size, size])
    torch.testing.assert_close(out, _normalize(expected), atol=0.02, rtol=0)
    raw = (
        out * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    )
    assert raw[:, :, : size // 2 - 4].max() < 0.05 and raw[:, :, size // 2 + 4 :].min() > 0.95


def test_resize_below_the_input_size_is_an_error() -> None:
    with pytest.raises(ValueError, match="resize=200 is below input_size=224"):
        eval_transform(224, resize=200)


def test_grayscale_becomes_three_equal_channels() -> None:
    out = eval_transform(8)(Image.new("L", (8, 8), color=128))
    raw = (
        out * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    )
    torch.testing.assert_close(raw, torch.full((3, 8, 8), 128 / 255))


def test_bad_input_size() -> None:
    with pytest.raises(ValueError, match="input_size must be >= 1, got 0"):
        eval_transform(0)


def test_folder_and_shards_give_the_same_features(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "src", per_class=4)
    convert(folder, tmp_path / "shards", ShardSettings(max_count=5), workers=1)
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1))  # (B, 4, 1, 1)
    by_folder = extract_features(backbone, open_labeled(folder, eval_transform(16)), batch_size=5)
    shards = open_labeled(tmp_path / "shards", eval_transform(16))
    by_shards = extract_features(backbone, shards, batch_size=5)
    assert shards.classes == ["blue", "green", "red"] == open_labeled(folder).classes
    assert by_folder.features.shape == (12, 4) and by_shards.features.shape == (12, 4)
    # Shards re-encode nothing here (PNG bytes are kept), so features match per class.
    for c in range(3):
        a = by_folder.features[by_folder.labels == c].sort(dim=0).values
        b = by_shards.features[by_shards.labels == c].sort(dim=0).values
        torch.testing.assert_close(a, b)
    assert by_folder.keys[0] == "blue/blue_000.png"


def test_extract_features_restores_training_mode_and_maps_targets(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "a", per_class=2, classes=("green", "red"))
    backbone = PixelFeatures().train()
    data = open_labeled(folder, eval_transform(4))
    feats = extract_features(backbone, data, batch_size=3, target_map=torch.tensor([7, 9]))
    assert backbone.training
    assert feats.labels.tolist() == [7, 7, 9, 9]
    assert feats.features.shape == (4, 3 * 4 * 4)


def test_class_mapping_by_name(tmp_path: Path) -> None:
    val = open_labeled(make_folder(tmp_path / "val", per_class=1, classes=("red", "blue")))
    assert class_mapping(["blue", "green", "red"], val).tolist() == [0, 2]  # val: blue, red
    with pytest.raises(ValueError, match=r"val'.*1 classes.*\('red'\)"):
        class_mapping(["blue", "green"], val)


def test_bad_sources_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing"):
        open_labeled(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty.*empty folder"):
        open_labeled(tmp_path / "empty")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (4, 4)).save(flat / "a.png")
    with pytest.raises(ValueError, match=r"flat.*no class subfolders"):
        open_labeled(flat)
    convert(flat, tmp_path / "flat_shards", workers=1)
    with pytest.raises(ValueError, match=r"flat_shards.*without class subfolders"):
        open_labeled(tmp_path / "flat_shards")
    (tmp_path / "hollow" / "cls").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="cls"):
        open_labeled(tmp_path / "hollow")


class _Constant(nn.Module):
    """A backbone whose features are ``value`` (NaN or inf: a diverged network)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.full((images.shape[0], 4), self.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_features_are_refused(value: float, tmp_path: Path) -> None:
    data = open_labeled(make_folder(tmp_path / "d", per_class=2), eval_transform(16))
    with pytest.raises(NonFiniteFeaturesError, match=r"checkpoint 'x\.ckpt' gives NaN or inf"):
        extract_features(_Constant(value), data, origin="checkpoint 'x.ckpt'")
    assert extract_features(_Constant(1.0), data).features.shape == (6, 4)
