"""What the engines' distribution tests share (tests/data/engines/dali/test_pipeline.py,
tests/data/engines/test_ffcv.py, tests/transforms/test_view_params.py): the reference
sampler (torchvision through the ViewSpec), images that encode what an augmentation did,
and the two statistical assertions (binomial 4-sigma rates, two-sample KS p > 0.001).
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
import torch
from scipy import stats

from fastssl.transforms.view_spec import ViewSpec

N = 384  # samples per engine: 6 batches of 64
WIDTH, HEIGHT = 120, 100  # of the coordinate image (R = x and G = y must fit in uint8)
BATCH = 64
# Every random operation off; tests switch on the one they measure.
PLAIN = ViewSpec(
    crop_size=None,
    hf_prob=0.0,
    cj_prob=0.0,
    gray_prob=0.0,
    blur_prob=0.0,
    normalize_mean=None,
    normalize_std=None,
)


def torchvision_views(image: np.ndarray, spec: ViewSpec, n: int = N) -> np.ndarray:
    """``n`` views of an (H, W, 3) uint8 image by the torchvision engine, (n, 3, h, w) in
    the uint8 scale."""
    torch.manual_seed(0)
    view = spec.build_torchvision()
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    return torch.stack([view(tensor) for _ in range(n)]).numpy() * 255.0


def assert_rate(values: list[bool] | np.ndarray, p: float, name: str) -> None:
    """The rate of ``values`` is ``p`` within 4 binomial standard deviations."""
    rate = float(np.mean(values))
    bound = 4 * math.sqrt(p * (1 - p) / len(values)) + 1e-9
    assert abs(rate - p) <= bound, f"{name}: rate {rate:.3f}, expected {p} +- {bound:.3f}"


def assert_same(a: np.ndarray, b: np.ndarray, name: str, engine: str = "ours") -> None:
    """``a`` (the engine's) and ``b`` (torchvision's) pass a two-sample KS test."""
    p = stats.ks_2samp(a, b).pvalue
    assert p > 1e-3, (
        f"{name}: KS p={p:.2e}; {engine} {np.percentile(a, [10, 50, 90])}, "
        f"torchvision {np.percentile(b, [10, 50, 90])}"
    )


def coordinate_image(width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """R = x, G = y, B = 128: a crop's box can be read back from its pixels."""
    x = np.broadcast_to(np.arange(width, dtype=np.uint8)[None, :], (height, width))
    y = np.broadcast_to(np.arange(height, dtype=np.uint8)[:, None], (height, width))
    return np.stack([x, y, np.full_like(x, 128)], axis=-1).copy()


def crop_box(views: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Width, height (source pixels) and horizontal flip of every crop of a coordinate
    image."""
    size_h, size_w = views.shape[-2:]
    # Pixel centers i + 0.5 of the output map linearly to the source: the first and last
    # columns are (size - 1) / size of the crop's width apart.
    dx = views[:, 0, :, -1].mean(1) - views[:, 0, :, 0].mean(1)
    dy = views[:, 1, -1, :].mean(1) - views[:, 1, 0, :].mean(1)
    return np.abs(dx) * size_w / (size_w - 1), dy * size_h / (size_h - 1), dx < 0


def hsv_hue(rgb: np.ndarray) -> np.ndarray:
    """HSV hue in [0, 1) of every (r, g, b) row in the uint8 scale."""
    return np.array([colorsys.rgb_to_hsv(*(c / 255.0))[0] for c in rgb])
