"""The FFCV engine draws and computes what the torch engine does, from one pass per image.

Statistics (as tests/data/engines/dali/test_pipeline.py checks DALI): each test runs one
ViewSpec through the FFCV engine and through torchvision a few hundred times on a synthetic
image whose pixels encode what the augmentation did (coordinates for crops and flips, flat
colors for jitter, a line for blur), recovers the drawn parameter from every output and
compares the two samples: a two-sample KS test (p > 0.001) for continuous parameters,
binomial 4-sigma bounds for rates. Values: the crop's resampling, rotation, the jitter ops in
each order and normalization against torchvision's functional ops. Structure: batches,
dtypes, multi-crop sizes, seeding by (seed, epoch, sample), exactly-once epochs across ranks
and threads, held batches never overwritten, errors that name the field.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from fastssl.data.engines import ffcv_kernels
from fastssl.data.engines.ffcv_kernels import COL, plain_row
from fastssl.transforms.multi_view_transform import MultiViewTransform, ViewTransform
from fastssl.transforms.view_spec import ViewSpec
from tests.data.engines._distributions import (
    BATCH,
    HEIGHT,
    PLAIN,
    WIDTH,
    N,
    assert_rate,
    assert_same,
    coordinate_image,
    crop_box,
    hsv_hue,
    torchvision_views,
)

pytest.importorskip("ffcv")

from ffcv.fields import IntField, RGBImageField
from ffcv.writer import DatasetWriter

from fastssl.data.engines.ffcv import FFCVViews, draft_reduction, epoch_order
from fastssl.data.ffcv_source import BetonImages
from fastssl.data.loader import make_loader, resolve_backend
from fastssl.data.shards import ShardSettings, convert, key

pytestmark = pytest.mark.ffcv


class _Images:
    def __init__(self, images: list[np.ndarray]) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], index % 2


def _write(path: Path, images: list[np.ndarray], mode: str = "raw") -> Path:
    """A .beton of ``images`` (HWC uint8) with labels ``index % 2``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = {"image": RGBImageField(write_mode=mode, jpeg_quality=95), "label": IntField()}
    DatasetWriter(str(path), fields, num_workers=1).from_indexed_dataset(_Images(images))
    return path


def _beton(tmp_path: Path, image: np.ndarray, n: int = N, mode: str = "raw") -> Path:
    return _write(tmp_path / f"copies-{mode}.beton", [image] * n, mode)


def _ffcv(beton: Path, spec: ViewSpec, n: int = N, seed: int = 1, **kwargs: object) -> np.ndarray:
    """n outputs of the FFCV engine as a (n, 3, h, w) array in the uint8 scale."""
    views = FFCVViews(
        beton, [spec], batch_size=BATCH, shuffle=False, drop_last=False, seed=seed, **kwargs
    )  # type: ignore[arg-type]
    out = [batch[0][0].float().numpy() for batch in views]
    return np.concatenate(out)[:n] * 255.0


def _both(
    tmp_path: Path, image: np.ndarray, spec: ViewSpec, measure: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    return measure(_ffcv(_beton(tmp_path, image), spec)), measure(torchvision_views(image, spec))


# ------------------------------------------------------------------------- distributions
@pytest.mark.parametrize("mode", ["raw", "jpg"])
def test_crop_area_ratio_and_flip_match_torchvision(tmp_path: Path, mode: str) -> None:
    # jpg: crops of 64 px and more are decoded at half size (the DCT reduction).
    image = coordinate_image()
    spec = PLAIN.replace(crop_size=32, hf_prob=0.5)
    w_f, h_f, flip_f = crop_box(_ffcv(_beton(tmp_path, image, mode=mode), spec))
    w_t, h_t, flip_t = crop_box(torchvision_views(image, spec))
    area = WIDTH * HEIGHT
    assert_same(w_f * h_f / area, w_t * h_t / area, "area fraction", engine="FFCV")
    assert_same(np.log(w_f / h_f), np.log(w_t / h_t), "log aspect ratio", engine="FFCV")
    assert (w_f * h_f / area).min() > 0.06 and (w_f * h_f / area).max() < 1.05
    assert np.exp(np.abs(np.log(w_f / h_f))).max() < 4 / 3 * 1.1
    assert_rate(flip_f, 0.5, "FFCV horizontal flip")
    assert_rate(flip_t, 0.5, "torch horizontal flip")


def test_narrow_scale_and_ratio_are_honoured(tmp_path: Path) -> None:
    spec = PLAIN.replace(crop_size=(24, 48), crop_scale=(0.3, 0.5), crop_ratio=(1.5, 2.0))
    views = _ffcv(_beton(tmp_path, coordinate_image()), spec)
    assert views.shape[1:] == (3, 24, 48)
    w, h, _ = crop_box(views)
    area = w * h / (WIDTH * HEIGHT)
    assert area.min() > 0.27 and area.max() < 0.53
    assert (w / h).min() > 1.4 and (w / h).max() < 2.1


def test_vertical_flip_rate(tmp_path: Path) -> None:
    spec = PLAIN.replace(vf_prob=0.3)

    def flipped(views: np.ndarray) -> np.ndarray:
        return views[:, 1, 0, 0] > views[:, 1, -1, 0]  # G = y decreases downwards

    ffcv, tv = _both(tmp_path, coordinate_image(32, 24), spec, flipped)
    assert_rate(ffcv, 0.3, "FFCV vertical flip")
    assert_rate(tv, 0.3, "torch vertical flip")


@pytest.mark.parametrize(
    ("size", "degrees"), [((64, 64), None), ((40, 56), None), ((48, 48), (30.0, 30.0))]
)
def test_rotation_equals_torchvision(
    tmp_path: Path, size: tuple[int, int], degrees: tuple[float, float] | None
) -> None:
    image = coordinate_image(size[1], size[0])
    spec = PLAIN.replace(rr_prob=1.0, rr_degrees=degrees)
    ffcv = _ffcv(_beton(tmp_path, image, n=4), spec, n=4)
    tv = torchvision_views(image, spec, n=1)
    agree = np.isclose(ffcv, np.broadcast_to(tv, ffcv.shape), atol=1e-3).all(axis=1).mean()
    assert agree > 0.995, f"{agree:.4f} of the pixels agree with torchvision's rotation"


def test_grayscale_rate_and_values(tmp_path: Path) -> None:
    spec = PLAIN.replace(gray_prob=0.3)
    image = coordinate_image(64, 48)

    def gray(views: np.ndarray) -> np.ndarray:
        return np.ptp(views, axis=1).max(axis=(1, 2)) < 1.5

    ffcv, tv = _ffcv(_beton(tmp_path, image), spec), torchvision_views(image, spec)
    assert_rate(gray(ffcv), 0.3, "FFCV grayscale")
    assert_rate(gray(tv), 0.3, "torch grayscale")
    # The gray level is the luma (0.299 R + 0.587 G + 0.114 B) in both engines.
    np.testing.assert_allclose(ffcv[gray(ffcv)][0], tv[gray(tv)][0], atol=1.01)


def test_solarization_rate(tmp_path: Path) -> None:
    spec = PLAIN.replace(solarize_prob=0.2, solarize_threshold=128)
    image = np.full((16, 16, 3), 200, dtype=np.uint8)

    def solarized(views: np.ndarray) -> np.ndarray:
        assert set(np.unique(views.round())) <= {55.0, 200.0}
        return views[:, 0, 0, 0].round() == 55

    ffcv, tv = _both(tmp_path, image, spec, solarized)
    assert_rate(ffcv, 0.2, "FFCV solarization")
    assert_rate(tv, 0.2, "torch solarization")


def test_blur_rate_and_sigma(tmp_path: Path) -> None:
    spec = PLAIN.replace(blur_prob=0.5, blur_sigmas=(0.1, 2.0))
    image = np.zeros((31, 31, 3), dtype=np.uint8)
    image[:, 15] = 255  # a vertical line: its blurred profile has variance sigma^2

    def spread(views: np.ndarray) -> np.ndarray:
        profile = views[:, 0, 15, :]
        x = np.arange(31) - 15
        return np.sqrt((profile * x**2).sum(1) / profile.sum(1))

    ffcv, tv = _both(tmp_path, image, spec, spread)
    assert_same(ffcv, tv, "blur spread", engine="FFCV")
    expected = 0.5 * 1.4 / 1.9  # P(blurred with sigma > 0.6); the spread tracks sigma there
    assert_rate(ffcv > 0.6, expected, "FFCV blur with sigma > 0.6")
    assert_rate(tv > 0.6, expected, "torch blur with sigma > 0.6")


def test_brightness_factor_distribution(tmp_path: Path) -> None:
    spec = PLAIN.replace(cj_prob=0.5, cj_bright=0.8, cj_contrast=0, cj_sat=0, cj_hue=0)
    image = np.full((8, 8, 3), 100, dtype=np.uint8)

    def factor(views: np.ndarray) -> np.ndarray:
        return views[:, 0, 0, 0] / 100.0

    ffcv, tv = _both(tmp_path, image, spec, factor)
    assert_rate(np.abs(ffcv - 1) > 0.006, 0.5, "FFCV jitter probability")
    assert_rate(np.abs(tv - 1) > 0.006, 0.5, "torch jitter probability")
    jittered_f, jittered_t = ffcv[np.abs(ffcv - 1) > 0.006], tv[np.abs(tv - 1) > 0.006]
    assert_same(jittered_f, jittered_t, "brightness factor", engine="FFCV")
    assert jittered_f.min() > 0.19 and jittered_f.max() < 1.81


def test_saturation_factor_distribution(tmp_path: Path) -> None:
    spec = PLAIN.replace(cj_prob=1.0, cj_bright=0, cj_contrast=0, cj_sat=0.8, cj_hue=0)
    image = np.empty((8, 8, 3), dtype=np.uint8)
    image[...] = (160, 110, 90)

    def factor(views: np.ndarray) -> np.ndarray:
        return (views[:, 0, 0, 0] - views[:, 2, 0, 0]) / 70.0  # R - B scales by the factor

    ffcv, tv = _both(tmp_path, image, spec, factor)
    assert_same(ffcv, tv, "saturation factor", engine="FFCV")


def test_contrast_factor_distribution(tmp_path: Path) -> None:
    spec = PLAIN.replace(cj_prob=1.0, cj_bright=0, cj_contrast=0.5, cj_sat=0, cj_hue=0)
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[:4] = 100
    image[4:] = 140  # mean gray 120: contrast scales the +-20 around it

    def factor(views: np.ndarray) -> np.ndarray:
        return (views[:, 0, 7, 0] - views[:, 0, 0, 0]) / 40.0

    ffcv, tv = _both(tmp_path, image, spec, factor)
    assert_same(ffcv, tv, "contrast factor", engine="FFCV")
    assert ffcv.min() > 0.45 and ffcv.max() < 1.55


def test_hue_shift_distribution(tmp_path: Path) -> None:
    # Both engines shift H in HSV by a fraction of the circle uniform in [-h, h].
    spec = PLAIN.replace(cj_prob=1.0, cj_bright=0, cj_contrast=0, cj_sat=0, cj_hue=0.1)
    color = np.array([150.0, 110.0, 100.0])
    image = np.empty((8, 8, 3), dtype=np.uint8)
    image[...] = color
    ffcv, tv = _both(tmp_path, image, spec, lambda v: v[:, :, 0, 0])
    shifts = [(hsv_hue(v) - hsv_hue(color[None])[0] + 0.5) % 1.0 - 0.5 for v in (ffcv, tv)]
    assert np.abs(shifts[0]).max() < 0.11 and np.abs(shifts[1]).max() < 0.11
    assert_same(shifts[0], shifts[1], "hue shift", engine="FFCV")
    # uint8 rounding moves small shifts by up to ~0.01 of the circle.
    assert stats.kstest(shifts[0], stats.uniform(loc=-0.1, scale=0.2).cdf).pvalue > 1e-3


def test_whole_view_statistics_match_torchvision(tmp_path: Path) -> None:
    # SimCLR's and DINO's views with every operation on: per-channel mean and spread of the
    # outputs, FFCV against torchvision.
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    checker = np.where((x // 10 + y // 10) % 2 == 0, 60, 200)
    image = np.stack([x * 2, y * 2, checker], axis=-1).astype(np.uint8)
    beton = _beton(tmp_path, image)
    for spec in (
        ViewSpec(crop_size=32, normalize_mean=None, normalize_std=None),
        ViewSpec(crop_size=24, crop_scale=(0.05, 0.4), interpolation="bicubic", solarize_prob=0.2,
                 normalize_mean=None, normalize_std=None),
    ):  # fmt: skip
        ffcv, tv = _ffcv(beton, spec), torchvision_views(image, spec)
        for channel in range(3):
            for name, statistic in (("mean", np.mean), ("std", np.std)):
                assert_same(
                    statistic(ffcv[:, channel], axis=(1, 2)),
                    statistic(tv[:, channel], axis=(1, 2)),
                    f"{name} of channel {channel}",
                    engine="FFCV",
                )


def test_jitter_orders_are_uniform_permutations(tmp_path: Path) -> None:
    spec = ViewSpec(crop_size=8, cj_prob=1.0)
    views = FFCVViews(_beton(tmp_path, coordinate_image(16, 16), n=8), [spec], batch_size=8)
    counts: dict[tuple[int, ...], int] = {}
    for draw in range(2400):  # 300 epochs of the 8 samples
        order = views.draw(epoch=draw // 8, index=draw % 8)[1][0].jitter
        assert order is not None
        counts[order] = counts.get(order, 0) + 1
    assert sorted(counts) == sorted(itertools.permutations(range(4)))
    expected, sigma = 100, math.sqrt(2400 * (1 / 24) * (23 / 24))
    assert all(abs(count - expected) < 4 * sigma for count in counts.values()), counts


# --------------------------------------------------------------------------------- values
def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize(
    ("box", "size"),
    [((10, 20, 80, 90), (32, 40)), ((0, 0, 100, 120), (100, 120)), ((5, 7, 9, 11), (24, 24))],
)
def test_crop_resampling_equals_torchvision(
    interpolation: str, box: tuple[int, int, int, int], size: tuple[int, int]
) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    out = np.empty((3, *size), dtype=np.uint8)
    ffcv_kernels.augment_view(image, 1, plain_row(*box, interpolation), out)
    top, left, height, width = box
    crop = _tensor(image)[:, top : top + height, left : left + width]
    expected = F.resize(
        crop, list(size), interpolation=InterpolationMode(interpolation), antialias=True
    ).numpy()
    if interpolation == "bicubic":
        # Float between the two passes, as torch's float kernel: torchvision's uint8 kernel
        # clips the first pass's overshoot, which moves a few edge pixels of large upscales.
        expected = (
            torch.nn.functional.interpolate(
                crop[None].float(), size=size, mode="bicubic", antialias=True
            )[0].round().clamp(0, 255).numpy()
        )  # fmt: skip
    assert np.abs(out.astype(int) - expected).max() <= (0 if interpolation == "nearest" else 1)


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (2, 3, 0, 1), (1, 3, 0, 2)])
def test_jitter_in_each_order_equals_torchvision(order: tuple[int, ...]) -> None:
    image = np.random.default_rng(1).integers(30, 220, (12, 16, 3), dtype=np.uint8)
    factors = {0: 1.3, 1: 0.6, 2: 1.7, 3: 0.08}
    row = plain_row(0, 0, 12, 16)
    row[COL["jitter_count"]] = 4
    row[COL["order0"] : COL["order0"] + 4] = order
    row[[COL["brightness"], COL["contrast"], COL["saturation"], COL["hue"]]] = list(
        factors.values()
    )
    out = np.empty((3, 12, 16), dtype=np.uint8)
    ffcv_kernels.augment_view(image, 1, row, out)
    ops = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue]
    expected = _tensor(image).float() / 255.0
    for op in order:
        expected = ops[op](expected, factors[op]).clamp(0, 1)
    expected_u8 = (expected * 255.0).round().numpy()
    difference = np.abs(out.astype(float) - expected_u8)
    assert difference.max() <= 2 and difference.mean() < 0.3


def test_no_random_op_equals_torchvision_normalization(tmp_path: Path) -> None:
    image = coordinate_image(40, 30)
    spec = PLAIN.replace(normalize_mean=(0.5, 0.4, 0.3), normalize_std=(0.2, 0.25, 0.3))
    ffcv = _ffcv(_beton(tmp_path, image, n=2), spec, n=2) / 255.0
    tv = torchvision_views(image, spec, n=1) / 255.0
    np.testing.assert_allclose(ffcv, np.broadcast_to(tv, ffcv.shape), atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_views_round_the_float32_values(tmp_path: Path, dtype: torch.dtype) -> None:
    beton = _beton(tmp_path, coordinate_image(40, 30), n=8)
    spec = ViewSpec(crop_size=16, normalize_mean=(0.5, 0.4, 0.3), normalize_std=(0.2, 0.2, 0.2))
    full = next(iter(FFCVViews(beton, [spec], batch_size=8, seed=3)))[0][0]
    half = next(iter(FFCVViews(beton, [spec], batch_size=8, seed=3, dtype=dtype)))[0][0]
    assert half.dtype == dtype
    torch.testing.assert_close(half, full.to(dtype), rtol=0, atol=0)


def test_reduced_dct_decode_is_close_to_the_full_decode(tmp_path: Path) -> None:
    y, x = np.mgrid[0:256, 0:256]
    image = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)
    beton = _write(tmp_path / "big.beton", [image] * 4, mode="jpg")
    spec = PLAIN.replace(crop_size=32, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    views = FFCVViews(beton, [spec], batch_size=4)
    assert views.draw(0, 0)[0] == 8  # 256 px crops for 32 px views: an eighth-size decode
    ffcv = next(iter(views))[0][0].numpy() * 255.0
    decoded = np.array(BetonImages(beton).image(0))
    tv = F.resize(_tensor(decoded), [32, 32], antialias=True).float().numpy()
    assert np.abs(ffcv - tv[None]).mean() < 2.0


def test_draft_reduction_keeps_every_crop_at_least_its_output() -> None:
    from fastssl.transforms.view_params import ViewParams

    sizes = [(32, 32), (16, 16)]
    assert draft_reduction(sizes, [ViewParams(0, 0, 256, 256), ViewParams(0, 0, 128, 128)]) == 8
    assert draft_reduction(sizes, [ViewParams(0, 0, 256, 256), ViewParams(0, 0, 40, 40)]) == 2
    assert draft_reduction(sizes, [ViewParams(0, 0, 31, 256), ViewParams(0, 0, 128, 128)]) == 1


# ------------------------------------------------------------------------------ structure
@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 JPEGs of different sizes in 2 classes, converted to a .beton."""
    root = tmp_path_factory.mktemp("ffcv")
    rng = np.random.default_rng(0)
    for index in range(20):
        folder = root / "images" / f"c{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (40 + index, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:03d}.jpg", quality=90)
    convert(root / "images", root / "beton", ShardSettings(format="ffcv"), workers=1)
    return root / "beton"


def test_make_loader_auto_gives_the_batch_structure(photos: Path) -> None:
    spec = ViewSpec(crop_size=24)
    transform = MultiViewTransform([ViewTransform(spec), ViewTransform(spec.replace(crop_size=16))])
    loader = make_loader(photos, transform, backend="auto", batch_size=8, num_workers=2)
    assert loader.backend == "ffcv" and len(loader) == 2 and loader.num_unreadable == 0
    images = BetonImages(photos)
    for views, targets, keys in loader:
        assert [tuple(v.shape) for v in views] == [(8, 3, 24, 24), (8, 3, 16, 16)]
        assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)
        assert targets.dtype == torch.long and targets.shape == (8,)
        assert len(set(keys)) == 8 and all(k.isdigit() for k in keys)
        assert targets.tolist() == [images[int(k)][1] for k in keys]


def test_multi_crop_shapes_dtype_and_seed(photos: Path) -> None:
    specs = [ViewSpec(crop_size=32)] * 2 + [
        ViewSpec(crop_size=(16, 24), crop_scale=(0.05, 0.4), interpolation="bicubic")
    ] * 3
    batches = [
        next(iter(FFCVViews(photos, specs, batch_size=4, seed=seed, dtype=torch.float16)))[0]
        for seed in (3, 3, 4)
    ]
    assert [tuple(v.shape) for v in batches[0]] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 24)] * 3
    assert all(v.dtype == torch.float16 for v in batches[0])
    for a, b in zip(batches[0], batches[1], strict=True):
        assert torch.equal(a, b)  # same seed, same batch
    assert not torch.equal(batches[0][0], batches[2][0])
    assert not torch.equal(batches[0][0], batches[0][1])  # two views of the same images differ


def test_epochs_are_seeded_whatever_the_threads(photos: Path) -> None:
    spec = ViewSpec(crop_size=16)

    def epoch(threads: int, number: int, seed: int = 7) -> list[torch.Tensor]:
        views = FFCVViews(
            photos, [spec] * 2, batch_size=5, num_workers=threads, seed=seed, shuffle=False
        )  # the file's order every epoch: only the augmentations can change
        views.set_epoch(number)
        return [torch.cat(batch) for batch, _, _ in views]

    one = epoch(1, 0)
    assert all(torch.equal(a, b) for a, b in zip(one, epoch(2, 0), strict=True))
    assert not torch.equal(one[0], epoch(1, 1)[0])  # the next epoch augments anew
    assert not torch.equal(one[0], epoch(1, 0, seed=8)[0])


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_sample_once_per_epoch_across_ranks(
    photos: Path, world_size: int, drop_last: bool
) -> None:
    seen: list[str] = []
    for rank in range(world_size):
        views = FFCVViews(
            photos, [ViewSpec(crop_size=8)], batch_size=3, num_workers=2, rank=rank,
            world_size=world_size, drop_last=drop_last, seed=5,
        )  # fmt: skip
        views.set_epoch(2)
        keys = [k for _, _, batch in views for k in batch]
        assert len(views) == len(keys) // 3 if drop_last else -(-len(keys) // 3)
        seen += keys
    assert len(seen) == len(set(seen))  # never twice
    if drop_last:
        assert len(seen) >= 20 - world_size * 3
    else:
        assert sorted(seen) == [key(i) for i in range(20)]


def test_epoch_order_is_the_distributed_samplers() -> None:
    from torch.utils.data import DistributedSampler

    for rank in range(3):
        sampler = DistributedSampler(range(20), num_replicas=3, rank=rank, seed=4, drop_last=True)
        sampler.set_epoch(6)
        order = epoch_order(20, 6, seed=4, shuffle=True, rank=rank, world_size=3, drop_last=True)
        assert order.tolist() == list(sampler)


def test_a_held_batch_is_never_overwritten(photos: Path) -> None:
    views = FFCVViews(photos, [ViewSpec(crop_size=16)] * 2, batch_size=4, num_workers=2)
    kept, copies = [], []
    for epoch in range(2):  # every batch kept: FFCV runs ahead, but never into them
        views.set_epoch(epoch)
        for batch, _, _ in views:
            kept.append(batch)
            copies.append([v.clone() for v in batch])
    for batch, clone in zip(kept, copies, strict=True):
        assert all(torch.equal(v, c) for v, c in zip(batch, clone, strict=True))
    pointers = []
    del kept, copies, batch, clone
    for _ in range(3):  # batches dropped at once: their memory comes back
        pointers += [batch[0].data_ptr() for batch, _, _ in views]
    assert len(set(pointers)) < len(pointers)


def test_one_decoder_reads_every_image_once(photos: Path) -> None:
    from ffcv.pipeline.graph import DecoderNode

    views = FFCVViews(photos, [ViewSpec(crop_size=8)] * 4, batch_size=4)
    decoders = [n for n in views._loader.graph.nodes if isinstance(n, DecoderNode)]
    assert sorted(n.field_name for n in decoders) == ["image", "label"]


def test_a_damaged_jpeg_gives_black_views_and_is_counted(tmp_path: Path) -> None:
    image = coordinate_image(32, 32)
    beton = _write(tmp_path / "damaged.beton", [image] * 4, mode="jpg")
    from ffcv.reader import Reader

    pointer = int(Reader(str(beton)).metadata["f0"]["data_ptr"][2])
    with open(beton, "r+b") as handle:  # the JPEG's start-of-image marker of sample 2
        handle.seek(pointer)
        handle.write(b"\x00\x00\x00\x00")
    views = FFCVViews(beton, [PLAIN], batch_size=4, shuffle=False)
    with pytest.warns(UserWarning, match="sample 000000002 of the .beton failed to decode"):
        batch = next(iter(views))[0][0]
    assert views.num_unreadable == 1
    assert float(batch[2].abs().max()) == 0.0 and float(batch[1].max()) > 0.0


def test_bad_arguments_name_the_value(tmp_path: Path, photos: Path) -> None:
    with pytest.raises(ValueError, match="specs is empty"):
        FFCVViews(photos, [], batch_size=2)
    with pytest.raises(ValueError, match=r"dtype=torch.int8 is not supported"):
        FFCVViews(photos, [PLAIN], batch_size=2, dtype=torch.int8)
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        FFCVViews(photos, [PLAIN], batch_size=2, rank=2, world_size=2)
    with pytest.raises(
        ValueError, match=r"view 1: ViewSpec field crop_size=None .* set a crop_size"
    ):
        FFCVViews(photos, [ViewSpec(crop_size=8), PLAIN], batch_size=2)
    labels_only = tmp_path / "labels.beton"
    DatasetWriter(str(labels_only), {"label": IntField()}, num_workers=1).from_indexed_dataset(
        [(1,), (2,)]
    )
    with pytest.raises(ValueError, match=r"RGBImageField named 'image'.*\['label'\]"):
        FFCVViews(labels_only, [PLAIN], batch_size=2)


# ------------------------------------------------------------- per-sample fallback
def test_transform_without_view_specs_falls_back_to_torch_workers(photos: Path) -> None:
    def two_gray_views(image: Image.Image) -> list[torch.Tensor]:
        tensor = F.pil_to_tensor(image.convert("L").resize((8, 8))).float()
        return [tensor, tensor.flip(-1)]

    choice = resolve_backend("ffcv", "ffcv", "cpu", two_gray_views)
    assert (
        choice.name == "torch" and choice.fallback and "not built from ViewSpecs" in choice.reason
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = make_loader(photos, two_gray_views, backend="ffcv", batch_size=4, num_workers=0)
    assert any("not built from ViewSpecs" in str(w.message) for w in caught)
    assert loader.backend == "torch" and loader.kind == "ffcv"
    images = BetonImages(photos)
    keys = []
    for views, targets, batch_keys in loader:
        assert [tuple(v.shape) for v in views] == [(4, 1, 8, 8)] * 2
        assert targets.tolist() == [images[int(k)][1] for k in batch_keys]
        keys += batch_keys
    assert sorted(keys) == [key(i) for i in range(20)]


class _PerSample:
    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        return [F.pil_to_tensor(image)]


@pytest.mark.parametrize(
    ("backend", "device", "transform", "name", "reason", "fallback"),
    [
        ("auto", "cpu", ViewSpec(crop_size=8), "ffcv", "read by FFCV", False),
        ("auto", "cuda", ViewSpec(crop_size=8), "ffcv", "read by FFCV", False),
        ("ffcv", "cpu", ViewSpec(crop_size=8), "ffcv", "was asked for", False),
        ("auto", "cpu", _PerSample(), "torch", "_PerSample is not built from ViewSpecs", False),
        ("auto", "cuda", _PerSample(), "torch", "FFCV cannot compile it", True),
        ("ffcv", "cpu", _PerSample(), "torch", "torch workers call it", True),
        ("torch", "cpu", _PerSample(), "torch", "not built from ViewSpecs", False),
    ],
)
def test_backend_choice_for_a_beton(
    backend: str, device: str, transform: object, name: str, reason: str, fallback: bool
) -> None:
    choice = resolve_backend(backend, "ffcv", device, transform)
    assert (choice.name, choice.fallback) == (name, fallback) and reason in choice.reason


def test_torch_backend_is_refused_for_view_specs_on_a_beton() -> None:
    with pytest.raises(ValueError, match=r"backend='torch' cannot read an FFCV \.beton"):
        resolve_backend("torch", "ffcv", "cpu", ViewSpec(crop_size=8))


@pytest.mark.parametrize("mode", ["raw", "jpg"])
def test_beton_images_are_the_stored_images(tmp_path: Path, mode: str) -> None:
    stored = [coordinate_image(24 + i, 16 + 2 * i) for i in range(3)]
    images = BetonImages(_write(tmp_path / f"{mode}.beton", stored, mode=mode))
    assert len(images) == 3 and images[2][1:] == (0, key(2))
    for index, array in enumerate(stored):
        decoded = np.asarray(images.image(index)).astype(int)
        assert decoded.shape == array.shape
        assert np.abs(decoded - array).max() <= (0 if mode == "raw" else 8)
    with pytest.raises(IndexError, match="index 3 is out of range for 3 samples"):
        images[3]
