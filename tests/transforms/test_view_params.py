"""The random parameters of a view follow torchvision's distributions for every op.

Each op's draws (crop boxes, flips, rotation, jitter order and factors, grayscale, blur
sigma, solarization) are compared with torchvision's own ``get_params`` / ``make_params``
over thousands of draws: two-sample KS tests (p > 0.001) for continuous values, 4-sigma
binomial bounds for rates.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch
from scipy import stats
from torchvision import transforms as T

from fastssl.transforms.view_params import ViewParams, draw_view_params, random_resized_crop_box
from fastssl.transforms.view_spec import ViewSpec
from tests.data.engines._distributions import PLAIN, assert_rate, assert_same

DRAWS = 4000


@pytest.mark.parametrize(
    ("width", "height", "scale", "ratio"),
    [
        (500, 375, (0.08, 1.0), (3 / 4, 4 / 3)),  # SimCLR on an ImageNet-like photo
        (64, 200, (0.3, 0.5), (1.5, 2.0)),  # narrow ranges, a tall image: some tries fail
    ],
)
def test_crop_boxes_follow_torchvision_random_resized_crop(width, height, scale, ratio) -> None:
    rng = random.Random(0)
    ours = np.array(
        [random_resized_crop_box(width, height, scale, ratio, rng) for _ in range(DRAWS)]
    )
    torch.manual_seed(0)
    image = torch.zeros(3, height, width)
    theirs = np.array([T.RandomResizedCrop.get_params(image, scale, ratio) for _ in range(DRAWS)])
    for boxes in (ours, theirs):
        top, left, h, w = boxes.T
        assert (top >= 0).all() and (left >= 0).all()
        assert (top + h <= height).all() and (left + w <= width).all()

    def area(b: np.ndarray) -> np.ndarray:
        return b[:, 2] * b[:, 3] / (width * height)

    def centre_x(b: np.ndarray) -> np.ndarray:
        return (b[:, 1] + b[:, 3] / 2) / width

    assert_same(area(ours), area(theirs), "area fraction")
    assert_same(np.log(ours[:, 3] / ours[:, 2]), np.log(theirs[:, 3] / theirs[:, 2]), "log ratio")
    assert_same(centre_x(ours), centre_x(theirs), "horizontal centre")


def test_crop_box_fallback_is_torchvision_centre_crop() -> None:
    # No box of 90% of a 100 x 10 image is square: both fall back to the same centre crop.
    image = torch.zeros(3, 10, 100)
    expected = T.RandomResizedCrop.get_params(image, (0.9, 1.0), (1.0, 1.0))
    assert random_resized_crop_box(100, 10, (0.9, 1.0), (1.0, 1.0), random.Random(0)) == expected
    assert expected == (0, 45, 10, 10)


def test_rates_orders_and_ranges_of_every_random_op() -> None:
    spec = ViewSpec(
        crop_size=16, hf_prob=0.5, vf_prob=0.3, rr_prob=0.4, rr_degrees=30.0, cj_prob=0.8,
        gray_prob=0.2, blur_prob=0.5, blur_sigmas=(0.1, 2.0), solarize_prob=0.1,
    )  # fmt: skip
    rng = random.Random(1)
    draws = [draw_view_params(spec, 40, 30, rng) for _ in range(DRAWS)]
    assert_rate([p.hflip for p in draws], 0.5, "horizontal flip")
    assert_rate([p.vflip for p in draws], 0.3, "vertical flip")
    assert_rate([p.rotation is not None for p in draws], 0.4, "rotation")
    assert_rate([p.jitter is not None for p in draws], 0.8, "color jitter")
    assert_rate([p.gray for p in draws], 0.2, "grayscale")
    assert_rate([p.blur_sigma is not None for p in draws], 0.5, "blur")
    assert_rate([p.solarize for p in draws], 0.1, "solarization")
    jittered = [p for p in draws if p.jitter is not None]
    counts = {order: 0 for order in itertools.permutations(range(4))}
    for p in jittered:
        counts[p.jitter] += 1  # type: ignore[index]
    for order, count in counts.items():
        assert_rate([True] * count + [False] * (len(jittered) - count), 1 / 24, f"order {order}")

    def uniform(values: list[float], low: float, high: float, name: str) -> None:
        assert low <= min(values) and max(values) <= high, name
        p = stats.kstest(values, stats.uniform(loc=low, scale=high - low).cdf).pvalue
        assert p > 1e-3, f"{name}: KS p={p:.2e}"

    uniform([p.brightness for p in jittered], 0.2, 1.8, "brightness")
    uniform([p.contrast for p in jittered], 0.2, 1.8, "contrast")
    uniform([p.saturation for p in jittered], 0.2, 1.8, "saturation")
    uniform([p.hue for p in jittered], -0.2, 0.2, "hue")
    uniform([p.blur_sigma for p in draws if p.blur_sigma is not None], 0.1, 2.0, "sigma")
    uniform([p.rotation for p in draws if p.rotation is not None], -30.0, 30.0, "angle")


def test_disabled_jitter_parts_are_left_out_and_quarter_turns_are_90_degrees() -> None:
    spec = PLAIN.replace(cj_prob=1.0, cj_bright=0.4, cj_contrast=0.0, cj_sat=0.0, cj_hue=0.1)
    spec = spec.replace(rr_prob=1.0)
    rng = random.Random(2)
    draws = [draw_view_params(spec, 20, 20, rng) for _ in range(200)]
    assert {p.jitter for p in draws} == {(0, 3), (3, 0)}
    assert all(p.contrast == 1.0 and p.saturation == 1.0 for p in draws)
    assert {p.rotation for p in draws} == {90.0}
    assert draw_view_params(PLAIN, 20, 10, rng) == ViewParams(0, 0, 10, 20)


# --------------------------------------------------------------------------------- values
