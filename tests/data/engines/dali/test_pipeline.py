"""The DALI engine draws the same augmentation distributions as the torchvision engine.

Each test runs one ViewSpec through both engines a few hundred times on a synthetic PNG
whose pixels encode what the augmentation did (coordinates for crops and flips, flat
colors for jitter, a line for blur), recovers the drawn parameter from every output, and
compares the two samples: a two-sample KS test (p > 0.001) for continuous parameters,
binomial 4-sigma bounds for rates.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats

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

pytest.importorskip("nvidia.dali")

from fastssl.data.engines.dali.pipeline import (
    _jitter_groups,
    _jitter_orders,
    build_pipeline,
    folder_reader,
)

pytestmark = pytest.mark.dali


def _write(folder: Path, image: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / "image.png")
    return folder


def _dali(folder: Path, spec: ViewSpec, n: int = N, seed: int = 1, **kwargs: object) -> np.ndarray:
    """n outputs of the DALI pipeline as a (n, 3, h, w) array in the uint8 scale."""
    pipe = build_pipeline(
        folder_reader(folder), [spec], batch_size=BATCH, num_threads=2, seed=seed, **kwargs
    )
    out = []
    while sum(len(o) for o in out) < n:
        out.append(np.asarray(pipe.run()[0].as_array()))
    return np.concatenate(out)[:n] * 255.0


def _both(
    tmp_path: Path, image: np.ndarray, spec: ViewSpec, measure: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    folder = _write(tmp_path / "img", image)
    return measure(_dali(folder, spec)), measure(torchvision_views(image, spec))


@pytest.mark.parametrize("roi_decode", [True, False])
def test_crop_area_ratio_and_flip_match_torchvision(tmp_path: Path, roi_decode: bool) -> None:
    image = coordinate_image()
    spec = PLAIN.replace(crop_size=32, hf_prob=0.5)
    folder = _write(tmp_path / "img", image)
    w_d, h_d, flip_d = crop_box(_dali(folder, spec, roi_decode=roi_decode))
    w_t, h_t, flip_t = crop_box(torchvision_views(image, spec))
    area = WIDTH * HEIGHT
    assert_same(w_d * h_d / area, w_t * h_t / area, "area fraction", engine="DALI")
    assert_same(np.log(w_d / h_d), np.log(w_t / h_t), "log aspect ratio", engine="DALI")
    # The sampler's support: area in scale, ratio in [3/4, 4/3] (up to rounding).
    assert (w_d * h_d / area).min() > 0.06 and (w_d * h_d / area).max() < 1.03
    assert np.exp(np.abs(np.log(w_d / h_d))).max() < 4 / 3 * 1.1
    assert_rate(flip_d, 0.5, "DALI horizontal flip")
    assert_rate(flip_t, 0.5, "torch horizontal flip")


def test_narrow_scale_and_ratio_are_honoured(tmp_path: Path) -> None:
    spec = PLAIN.replace(crop_size=(24, 48), crop_scale=(0.3, 0.5), crop_ratio=(1.5, 2.0))
    image = coordinate_image()
    w_d, h_d, _ = _both(tmp_path, image, spec, lambda v: np.stack(crop_box(v)))[0]
    area = w_d * h_d / (WIDTH * HEIGHT)
    assert area.min() > 0.27 and area.max() < 0.53
    assert (w_d / h_d).min() > 1.4 and (w_d / h_d).max() < 2.1


def test_vertical_flip_rate(tmp_path: Path) -> None:
    spec = PLAIN.replace(vf_prob=0.3)

    def flipped(views: np.ndarray) -> np.ndarray:
        return views[:, 1, 0, 0] > views[:, 1, -1, 0]  # G = y decreases downwards

    dali, tv = _both(tmp_path, coordinate_image(32, 24), spec, flipped)
    assert_rate(dali, 0.3, "DALI vertical flip")
    assert_rate(tv, 0.3, "torch vertical flip")


def test_quarter_turn_equals_torchvision(tmp_path: Path) -> None:
    image = coordinate_image(64, 64)
    spec = PLAIN.replace(rr_prob=1.0)
    dali = _dali(_write(tmp_path / "img", image), spec, n=4)
    tv = torchvision_views(image, spec, n=1)
    np.testing.assert_allclose(dali, np.broadcast_to(tv, dali.shape), atol=1e-3)


def test_grayscale_rate_and_values(tmp_path: Path) -> None:
    spec = PLAIN.replace(gray_prob=0.3)
    image = coordinate_image(64, 48)

    def gray(views: np.ndarray) -> np.ndarray:
        return np.ptp(views, axis=1).max(axis=(1, 2)) < 1.5

    folder = _write(tmp_path / "img", image)
    dali, tv = _dali(folder, spec), torchvision_views(image, spec)
    assert_rate(gray(dali), 0.3, "DALI grayscale")
    assert_rate(gray(tv), 0.3, "torch grayscale")
    # The gray level is the luma (0.299 R + 0.587 G + 0.114 B) in both engines.
    np.testing.assert_allclose(dali[gray(dali)][0], tv[gray(tv)][0], atol=1.01)


def test_solarization_rate(tmp_path: Path) -> None:
    spec = PLAIN.replace(solarize_prob=0.2, solarize_threshold=128)
    image = np.full((16, 16, 3), 200, dtype=np.uint8)

    def solarized(views: np.ndarray) -> np.ndarray:
        values = np.unique(views.round())
        assert set(values) <= {55.0, 200.0}
        return views[:, 0, 0, 0].round() == 55

    dali, tv = _both(tmp_path, image, spec, solarized)
    assert_rate(dali, 0.2, "DALI solarization")
    assert_rate(tv, 0.2, "torch solarization")


def test_blur_rate_and_sigma(tmp_path: Path) -> None:
    spec = PLAIN.replace(blur_prob=0.5, blur_sigmas=(0.1, 2.0))
    image = np.zeros((31, 31, 3), dtype=np.uint8)
    image[:, 15] = 255  # a vertical line: its blurred profile has variance sigma^2

    def spread(views: np.ndarray) -> np.ndarray:
        profile = views[:, 0, 15, :]
        x = np.arange(31) - 15
        return np.sqrt((profile * x**2).sum(1) / profile.sum(1))

    dali, tv = _both(tmp_path, image, spec, spread)
    assert_same(dali, tv, "blur spread", engine="DALI")
    # P(blurred with sigma > 0.6) = 0.5 * (2.0 - 0.6) / 1.9; the spread tracks sigma there.
    expected = 0.5 * 1.4 / 1.9
    assert_rate(dali > 0.6, expected, "DALI blur with sigma > 0.6")
    assert_rate(tv > 0.6, expected, "torch blur with sigma > 0.6")


def test_brightness_factor_distribution(tmp_path: Path) -> None:
    spec = PLAIN.replace(cj_prob=0.5, cj_bright=0.8, cj_contrast=0, cj_sat=0, cj_hue=0)
    image = np.full((8, 8, 3), 100, dtype=np.uint8)

    def factor(views: np.ndarray) -> np.ndarray:
        return views[:, 0, 0, 0] / 100.0

    dali, tv = _both(tmp_path, image, spec, factor)
    assert_rate(np.abs(dali - 1) > 0.006, 0.5, "DALI jitter probability")
    assert_rate(np.abs(tv - 1) > 0.006, 0.5, "torch jitter probability")
    jittered_d, jittered_t = dali[np.abs(dali - 1) > 0.006], tv[np.abs(tv - 1) > 0.006]
    assert_same(jittered_d, jittered_t, "brightness factor", engine="DALI")
    assert jittered_d.min() > 0.19 and jittered_d.max() < 1.81


def test_saturation_factor_distribution(tmp_path: Path) -> None:
    spec = PLAIN.replace(cj_prob=1.0, cj_bright=0, cj_contrast=0, cj_sat=0.8, cj_hue=0)
    image = np.empty((8, 8, 3), dtype=np.uint8)
    image[...] = (160, 110, 90)

    def factor(views: np.ndarray) -> np.ndarray:
        # Saturation blends with the luma: R - B scales by the factor.
        return (views[:, 0, 0, 0] - views[:, 2, 0, 0]) / 70.0

    dali, tv = _both(tmp_path, image, spec, factor)
    assert_same(dali, tv, "saturation factor", engine="DALI")


def test_contrast_factor_distribution(tmp_path: Path) -> None:
    spec = PLAIN.replace(cj_prob=1.0, cj_bright=0, cj_contrast=0.5, cj_sat=0, cj_hue=0)
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[:4] = 100
    image[4:] = 140  # mean gray 120: contrast scales the +-20 around it

    def factor(views: np.ndarray) -> np.ndarray:
        return (views[:, 0, 7, 0] - views[:, 0, 0, 0]) / 40.0

    dali, tv = _both(tmp_path, image, spec, factor)
    assert_same(dali, tv, "contrast factor", engine="DALI")
    assert dali.min() > 0.45 and dali.max() < 1.55


def _yiq_angle(rgb: np.ndarray) -> np.ndarray:
    i = 0.596 * rgb[..., 0] - 0.274 * rgb[..., 1] - 0.322 * rgb[..., 2]
    q = 0.211 * rgb[..., 0] - 0.523 * rgb[..., 1] + 0.312 * rgb[..., 2]
    return np.arctan2(q, i)


def test_hue_shift_is_uniform_in_each_engines_color_space(tmp_path: Path) -> None:
    # Deviation: DALI rotates hue in YIQ, torchvision shifts H in HSV; both by a fraction
    # of the circle drawn uniformly from [-h, h]. Each is checked in its own space.
    spec = PLAIN.replace(cj_prob=1.0, cj_bright=0, cj_contrast=0, cj_sat=0, cj_hue=0.1)
    color = np.array([150.0, 110.0, 100.0])
    image = np.empty((8, 8, 3), dtype=np.uint8)
    image[...] = color
    dali, tv = _both(tmp_path, image, spec, lambda v: v[:, :, 0, 0])
    shift_d = (_yiq_angle(dali) - _yiq_angle(color)) / (2 * np.pi)
    shift_t = hsv_hue(tv) - hsv_hue(color[None])[0]
    shift_t = (shift_t + 0.5) % 1.0 - 0.5
    uniform = stats.uniform(loc=-0.1, scale=0.2).cdf
    # uint8 rounding moves small shifts by up to ~0.01 of the circle.
    assert stats.kstest(shift_d, uniform).pvalue > 1e-3 or np.abs(shift_d).max() < 0.11
    assert np.abs(shift_d).max() < 0.11 and np.abs(shift_t).max() < 0.11
    assert stats.ks_2samp(np.abs(shift_d), np.abs(shift_t)).pvalue > 1e-3


def test_jitter_orders_follow_a_uniform_permutation() -> None:
    enabled = ["brightness", "contrast", "saturation", "hue"]
    groups = _jitter_groups(enabled)
    assert groups == [("brightness",), ("contrast",), ("saturation", "hue")]
    orders = _jitter_orders(enabled)
    assert len(orders) == 24
    # Naive count: the merged color op is first whenever saturation or hue is first.
    first = [order[0] for order in orders]
    for index, members in enumerate(groups):
        expected = sum(perm[0] in members for perm in itertools.permutations(enabled))
        assert first.count(index) == expected
    assert all(sorted(order) == [0, 1, 2] for order in orders)


def test_no_random_op_equals_torchvision_normalization(tmp_path: Path) -> None:
    image = coordinate_image(40, 30)
    spec = PLAIN.replace(normalize_mean=(0.5, 0.4, 0.3), normalize_std=(0.2, 0.25, 0.3))
    dali = _dali(_write(tmp_path / "img", image), spec, n=2) / 255.0
    tv = torchvision_views(image, spec, n=1) / 255.0
    np.testing.assert_allclose(dali, np.broadcast_to(tv, dali.shape), atol=1e-5)


def test_multi_crop_shapes_dtype_and_seed(tmp_path: Path) -> None:
    folder = _write(tmp_path / "img", coordinate_image())
    specs = [ViewSpec(crop_size=32)] * 2 + [
        ViewSpec(crop_size=(16, 24), crop_scale=(0.05, 0.4))
    ] * 3
    outputs = []
    for seed in (3, 3, 4):
        pipe = build_pipeline(folder_reader(folder), specs, batch_size=4, seed=seed, fp16=True)
        outputs.append([np.asarray(o.as_array()) for o in pipe.run()])
    shapes = [o.shape for o in outputs[0][:5]]
    assert shapes == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 24)] * 3
    assert outputs[0][0].dtype == np.float16
    for a, b in zip(outputs[0], outputs[1], strict=True):
        np.testing.assert_array_equal(a, b)  # same seed, same batch
    assert not np.array_equal(outputs[0][0], outputs[2][0])


def test_bad_arguments_name_the_value(tmp_path: Path) -> None:
    reader = folder_reader(_write(tmp_path / "img", coordinate_image()))
    with pytest.raises(ValueError, match="device='gpu'"):
        build_pipeline(reader, [PLAIN], batch_size=2, device="gpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shard_id=2, num_shards=2"):
        build_pipeline(reader, [PLAIN], batch_size=2, shard_id=2, num_shards=2)
    with pytest.raises(ValueError, match="specs is empty"):
        build_pipeline(reader, [], batch_size=2)
