from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T
from torchvision.transforms import functional as F

from fastssl.data.shards import ShardSettings, convert
from fastssl.eval.features import (
    CENTER_CROP_RATIO,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NonFiniteFeaturesError,
    PixelFeatures,
    class_mapping,
    eval_resize,
    eval_transform,
    extract_features,
    make_eval_loader,
    open_labeled,
    pooled_features,
    train_transform,
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


@pytest.mark.parametrize(
    ("size", "short_side"),
    [(224, 256), (160, 183), (128, 146), (96, 110), (65, 74)],  # 224 / 256 of the short side
)
def test_large_inputs_follow_lightlys_resize_256_center_crop_224(
    size: int, short_side: int
) -> None:
    # LightlySSL's kNN / linear / fine-tune evaluation: T.Resize(256), T.CenterCrop(224), at
    # every size above 64 px with the same crop ratio.
    assert eval_resize(size) == short_side
    assert round(size / CENTER_CROP_RATIO) == short_side and CENTER_CROP_RATIO == 224 / 256
    steps = eval_transform(size).transforms  # type: ignore[attr-defined]
    resize, crop = steps[1], steps[2]
    assert isinstance(resize, T.Resize) and resize.size == short_side
    assert isinstance(crop, T.CenterCrop) and crop.size == (size, size)
    image = Image.effect_noise((300, 260), 50).convert("RGB")
    expected = F.center_crop(F.resize(F.to_tensor(image), short_side), [size, size])
    out = eval_transform(size)(image)
    assert out.shape == (3, size, size)
    torch.testing.assert_close(out, _normalize(expected), atol=0.02, rtol=0)


def test_large_inputs_keep_aspect_and_center_crop() -> None:
    # Left half black, right half white, 200x100: short side -> 110, width -> 220; the
    # 96 px center crop spans columns 62..157 of the resized image, half black, half white.
    image = Image.new("RGB", (200, 100))
    image.paste((255, 255, 255), (100, 0, 200, 100))
    out = eval_transform(96)(image)
    assert out.shape == (3, 96, 96)
    raw = (
        out * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    )
    assert raw[:, :, :40].max() < 0.05 and raw[:, :, 56:].min() > 0.95


@pytest.mark.parametrize("size", [8, 32, 64])
def test_small_inputs_keep_the_whole_image(size: int) -> None:
    assert eval_resize(size) is None
    assert eval_resize(size, resize=size + 4) == size + 4


@pytest.mark.parametrize(("size", "min_scale"), [(224, 0.08), (32, 0.08), (16, 0.5)])
def test_train_transform_is_random_resized_crop_and_flip(size: int, min_scale: float) -> None:
    # LightlySSL's linear and fine-tune training images: T.RandomResizedCrop(224) (scale
    # 0.08-1, aspect 3/4-4/3) and T.RandomHorizontalFlip().
    steps = train_transform(size, min_scale).transforms  # type: ignore[attr-defined]
    crop, flip = steps[1], steps[2]
    assert isinstance(crop, T.RandomResizedCrop) and crop.size == (size, size)
    assert crop.scale == (min_scale, 1.0) and crop.ratio == pytest.approx((3 / 4, 4 / 3))
    assert isinstance(flip, T.RandomHorizontalFlip) and flip.p == 0.5
    torch.manual_seed(0)
    image = Image.effect_noise((300, 200), 50).convert("L")
    outs = [train_transform(size, min_scale)(image) for _ in range(2)]
    assert outs[0].shape == (3, size, size) and not torch.equal(outs[0], outs[1])  # random
    with pytest.raises(ValueError, match=r"min_scale must be in \(0, 1\]"):
        train_transform(size, 0.0)


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


@pytest.mark.parametrize(
    ("shape", "expected"), [((2, 5), (2, 5)), ((2, 5, 1, 1), (2, 5)), ((2, 5, 3, 4), (2, 5))]
)
def test_pooled_features_average_feature_maps(shape: tuple[int, ...], expected: tuple) -> None:
    out = torch.randn(shape)
    pooled = pooled_features(out)
    assert pooled.shape == expected
    if len(shape) == 4:
        torch.testing.assert_close(pooled, out.mean(dim=(2, 3)))


@pytest.mark.parametrize("method", ["densecl", "vicregl", "detconb"])
def test_dense_methods_are_scored_on_pooled_features(method: str, tmp_path: Path) -> None:
    """Dense methods keep their trunk's feature maps: `fastssl eval` scores the maps
    averaged over space (C features, as the method's own forward), not C x h x w."""
    from fastssl import methods
    from fastssl.eval.checkpoint import select_backbone
    from tests.methods.test_registry import build

    model = build(method).eval()
    backbone, _ = select_backbone(model)
    data = open_labeled(make_folder(tmp_path / "a", per_class=2), eval_transform(16))
    feats = extract_features(backbone, data, batch_size=2)
    n = len(feats.labels)
    assert feats.features.shape == (n, model.feature_dim)
    images = torch.cat([batch[0] for batch in make_eval_loader(data, 2, 0)])
    with torch.no_grad():
        torch.testing.assert_close(feats.features, model(images), rtol=1e-4, atol=1e-5)
    assert methods.get(method).eval_network == "online"
