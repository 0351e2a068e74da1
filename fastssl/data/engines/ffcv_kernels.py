"""Numba kernels of the FFCV engine: one sample's views from its decoded image, in one pass.

The FFCV engine (:mod:`fastssl.data.engines.ffcv`) decodes every image once and then, for
each view, runs :func:`augment_view` here inside FFCV's compiled decoder: the random
resized crop (antialiased resampling of the crop's region only, as torchvision's
``RandomResizedCrop(antialias=True)``: PIL's filters, ``nearest``, ``bilinear`` or
``bicubic``), horizontal and vertical flips, rotation, color jitter (brightness,
contrast, saturation and hue in the sample's drawn order), grayscale, Gaussian blur and
solarization, in a float32 workspace that stays in the CPU cache; the view is written as
uint8 (3, h, w). :func:`normalize_views` then scales and normalizes a batch of views into
float32, float16 or bfloat16 tensors.

Every random value comes from a row of per-view parameters (:data:`COLUMNS`), drawn in
Python by :func:`fastssl.transforms.view_params.draw_view_params`; the kernels are
deterministic. The color and blur operations are the batched torch engine's numba kernels
(:mod:`fastssl.transforms.batched_kernels`), so both engines compute the same values.

Compiled on first use and cached on disk like the batched kernels
(:func:`fastssl.transforms.batched_kernels.cache_dir`).

Example:
    >>> import numpy as np
    >>> image = np.zeros((20, 30, 3), dtype=np.uint8)
    >>> row = plain_row(top=0, left=0, height=20, width=30)
    >>> out = np.empty((3, 10, 15), dtype=np.uint8)
    >>> augment_view(image, 1, row, out)
    >>> int(out.max())
    0
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fastssl.transforms import batched_kernels

# The columns of a view's parameter row (float64). Geometry is in the pixels of the full-size
# image; the decoder divides by the DCT reduction it decoded at.
COLUMNS = (
    "top", "left", "height", "width",  # crop box
    "hflip", "vflip", "rotate", "angle",  # flips; rotation flag and counter-clockwise degrees
    "jitter_count", "order0", "order1", "order2", "order3",  # jitter ops in order (0..3)
    "brightness", "contrast", "saturation", "hue",  # jitter factors
    "gray", "sigma", "kernel_size",  # grayscale; blur sigma (0: none) and odd kernel size
    "solarize", "threshold",  # solarization flag and threshold (uint8 scale)
    "interpolation", "scale", "status",  # filter; DCT reduction; decode status (output)
)  # fmt: skip
COL: dict[str, int] = {name: index for index, name in enumerate(COLUMNS)}
NUM_COLUMNS = len(COLUMNS)
# Resampling filters (ViewSpec.interpolation).
INTERPOLATIONS: dict[str, int] = {"nearest": 0, "bilinear": 1, "bicubic": 2}

_KERNELS: dict[str, Any] = {}


def plain_row(top: int, left: int, height: int, width: int, interpolation: str = "bilinear") -> Any:
    """A parameter row with only a crop box (no flip, color, blur or solarization).

    >>> plain_row(1, 2, 3, 4)[:4].tolist()
    [1.0, 2.0, 3.0, 4.0]
    """
    row = np.zeros(NUM_COLUMNS)
    row[COL["top"] : COL["width"] + 1] = (top, left, height, width)
    row[COL["brightness"] : COL["saturation"] + 1] = 1.0
    row[COL["threshold"]] = 256.0
    row[COL["interpolation"]] = INTERPOLATIONS[interpolation]
    row[COL["scale"]] = 1.0
    return row


def kernels() -> dict[str, Any]:
    """The jitted kernels, declared once per process (compiled on first call, disk-cached)."""
    if not _KERNELS:
        with batched_kernels._caching_in(batched_kernels.cache_dir()):
            _declare()
    return _KERNELS


# Column numbers as module constants (numba freezes globals; closure cells would make the
# on-disk cache miss: numba keys it by their pickled contents).
_TOP, _LEFT, _HEIGHT, _WIDTH = COL["top"], COL["left"], COL["height"], COL["width"]
_HFLIP, _VFLIP, _ROTATE, _ANGLE = COL["hflip"], COL["vflip"], COL["rotate"], COL["angle"]
_COUNT, _ORDER = COL["jitter_count"], COL["order0"]
_BRIGHT, _CONTRAST, _SAT, _HUE = COL["brightness"], COL["contrast"], COL["saturation"], COL["hue"]
_GRAY, _SIGMA, _KSIZE = COL["gray"], COL["sigma"], COL["kernel_size"]
_SOLARIZE, _THRESHOLD, _INTERP = COL["solarize"], COL["threshold"], COL["interpolation"]
f32 = np.float32
# The kernels, bound by _declare() (module globals, so that they call each other as globals).
_scale: Any = None
_luma_mean: Any = None
_blend_constant: Any = None
_blend_gray: Any = None
_gray: Any = None
_hue: Any = None
_solarize: Any = None
_blur: Any = None
filter_weight: Any = None
coefficients: Any = None
resample: Any = None
rotate: Any = None
gaussian_taps: Any = None
color_ops: Any = None
_augment_view: Any = None
_normalize_views: Any = None
_lookup_views: Any = None


def _declare() -> None:
    """Declares the kernels as module globals, so that they call each other as globals."""
    global _scale, _luma_mean, _blend_constant, _blend_gray, _gray, _hue, _solarize, _blur
    global filter_weight, coefficients, resample, rotate, gaussian_taps, color_ops
    global _augment_view, _normalize_views, _lookup_views
    import numba
    from numba import prange

    color = batched_kernels._compile()
    _scale, _luma_mean, _blend_constant = (
        color["scale"],
        color["luma_mean"],
        color["blend_constant"],
    )
    _blend_gray, _gray, _hue = color["blend_gray"], color["gray"], color["hue"]
    _solarize, _blur = color["solarize"], color["blur"]
    jit = numba.njit(cache=True, fastmath=True, nogil=True, boundscheck=False)

    @jit
    def filter_weight(x: Any, kind: int) -> Any:
        # PIL's filters: triangle (bilinear) and Keys cubic with a = -0.5 (bicubic).
        x = abs(x)
        if kind == 1:
            return 1.0 - x if x < 1.0 else 0.0
        a = -0.5
        if x < 1.0:
            return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        if x < 2.0:
            return (((x - 5.0) * x + 8.0) * x - 4.0) * a
        return 0.0

    @jit
    def coefficients(start: Any, stop: Any, size: int, out_size: int, kind: int) -> Any:
        """PIL's resampling taps of [start, stop) (float source pixels) onto out_size.

        Taps stay within the crop's whole pixels, as torchvision crops before resizing.
        Returns (first tap (out,), tap count (out,), weights (out, taps)).
        """
        low = max(math.floor(start + 1e-4), 0)
        high = min(max(math.ceil(stop - 1e-4), low + 1), size)
        step = (stop - start) / out_size
        if kind == 0:  # nearest, as torch.nn.functional.interpolate(mode="nearest")
            firsts = np.empty(out_size, np.int64)
            counts = np.ones(out_size, np.int64)
            weights = np.ones((out_size, 1), np.float32)
            # torch's float32 scale; divided in float64 and rounded, so that fast-math (the
            # callers' reciprocal multiplication, once inlined) cannot move it by an ulp.
            step32 = f32((stop - start) / out_size)
            for o in range(out_size):
                firsts[o] = min(low + math.floor(f32(o) * step32), high - 1)
            return firsts, counts, weights
        filter_scale = max(step, 1.0)
        support = (1.0 if kind == 1 else 2.0) * filter_scale
        taps = math.ceil(support) * 2 + 1
        firsts = np.empty(out_size, np.int64)
        counts = np.empty(out_size, np.int64)
        weights = np.zeros((out_size, taps), np.float32)
        for o in range(out_size):
            center = start + (o + 0.5) * step
            first = max(int(center - support + 0.5), low)
            last = min(int(center + support + 0.5), high)
            if last <= first:  # a crop thinner than a pixel: its nearest pixel
                first = min(max(int(center), low), high - 1)
                last = first + 1
            count = min(last - first, taps)
            total = 0.0
            for k in range(count):
                w = filter_weight((first + k - center + 0.5) / filter_scale, kind)
                weights[o, k] = w
                total += w
            if total != 0.0:
                for k in range(count):
                    weights[o, k] /= total
            else:
                weights[o, 0] = 1.0
            firsts[o] = first
            counts[o] = count
        return firsts, counts, weights

    @jit
    def resample(image: Any, row: Any, reduction: int, out: Any) -> None:
        """Crops row's box from image (H, W, 3) uint8 decoded at 1/reduction, resizes it to
        out (3, h, w) float32 and flips it; values on the [0, 255] scale."""
        height, width = image.shape[0], image.shape[1]
        out_h, out_w = out.shape[1], out.shape[2]
        kind = int(row[_INTERP])
        r = float(reduction)
        top, left = row[_TOP] / r, row[_LEFT] / r
        ys, ny, wy = coefficients(top, top + row[_HEIGHT] / r, height, out_h, kind)
        xs, nx, wx = coefficients(left, left + row[_WIDTH] / r, width, out_w, kind)
        x_low = xs[0]
        x_high = x_low + 1
        for o in range(out_w):
            x_high = max(x_high, xs[o] + nx[o])
        span = (x_high - x_low) * 3
        rows = np.empty((out_h, span), np.float32)
        for o in range(out_h):  # vertical pass over the crop's columns (contiguous, vectorized)
            acc = rows[o]
            first = image[ys[o]].reshape(-1)[x_low * 3 : x_high * 3]
            w = wy[o, 0]
            for j in range(span):
                acc[j] = w * f32(first[j])
            for k in range(1, ny[o]):
                source = image[ys[o] + k].reshape(-1)[x_low * 3 : x_high * 3]
                w = wy[o, k]
                for j in range(span):
                    acc[j] += w * f32(source[j])
        hflip, vflip = row[_HFLIP] != 0.0, row[_VFLIP] != 0.0
        for o in range(out_h):  # horizontal pass into the planes, flipping as it writes
            oy = out_h - 1 - o if vflip else o
            acc = rows[o]
            for x in range(out_w):
                ox = out_w - 1 - x if hflip else x
                base = (xs[x] - x_low) * 3
                red = green = blue = f32(0.0)
                for k in range(nx[x]):
                    w = wx[x, k]
                    at = base + 3 * k
                    red += w * acc[at]
                    green += w * acc[at + 1]
                    blue += w * acc[at + 2]
                out[0, oy, ox] = red
                out[1, oy, ox] = green
                out[2, oy, ox] = blue

    @jit
    def rotate(x: Any, angle: float) -> None:
        """Rotates x (3, h, w) counter-clockwise in place: torch.rot90 for a quarter turn of a
        square image, else torchvision's rotate (nearest, same size, filled with 0)."""
        channels, height, width = x.shape
        source = x.copy()
        if angle == 90.0 and height == width:
            for ch in range(channels):
                for y in range(height):
                    for xx in range(width):
                        x[ch, y, xx] = source[ch, xx, width - 1 - y]
            return
        theta = math.radians(angle)
        cos, sin = math.cos(theta), math.sin(theta)
        for y in range(height):
            yo = y - height * 0.5 + 0.5
            for xx in range(width):
                xo = xx - width * 0.5 + 0.5
                sx = np.rint(cos * xo - sin * yo + width * 0.5 - 0.5)
                sy = np.rint(sin * xo + cos * yo + height * 0.5 - 0.5)
                inside = 0.0 <= sx < width and 0.0 <= sy < height
                for ch in range(channels):
                    x[ch, y, xx] = source[ch, int(sy), int(sx)] if inside else f32(0.0)

    @jit
    def gaussian_taps(sigma: float, size: int) -> Any:
        # torchvision's _get_gaussian_kernel1d: exp(-t^2 / (2 sigma^2)), t = -size//2..size//2.
        taps = np.empty(size, np.float32)
        half = size // 2
        total = 0.0
        for k in range(size):
            t = (k - half) / sigma
            taps[k] = math.exp(-0.5 * t * t)
            total += taps[k]
        for k in range(size):
            taps[k] = taps[k] / total
        return taps

    @jit
    def color_ops(x: Any, row: Any) -> None:
        """Jitter (in the row's order), grayscale, blur, solarization of x (3, h, w)."""
        planes = x.reshape(3, -1)
        for k in range(int(row[_COUNT])):
            op = int(row[_ORDER + k])
            if op == 0:
                factor = row[_BRIGHT]
                _scale(planes, f32(factor), factor > 1.0)
            elif op == 1:
                factor = row[_CONTRAST]
                mean = _luma_mean(planes)
                _blend_constant(planes, mean, f32(1.0 - factor), factor > 1.0)
            elif op == 2:
                factor = row[_SAT]
                _blend_gray(planes, f32(1.0 - factor), factor > 1.0)
            else:
                _hue(planes, f32(6.0 * row[_HUE]))
        if row[_GRAY] != 0.0:
            _gray(planes)
        size = int(row[_KSIZE])
        if row[_SIGMA] > 0.0 and size > 1:
            _blur(x, gaussian_taps(row[_SIGMA], size))
        if row[_SOLARIZE] != 0.0 and row[_THRESHOLD] <= 255.0:
            _solarize(planes, f32(row[_THRESHOLD]))

    @jit
    def _augment_view(image: Any, reduction: int, row: Any, out: Any) -> None:
        """One view of a decoded image (H, W, 3) uint8 into out (3, h, w) uint8."""
        x = np.empty((3, out.shape[1], out.shape[2]), np.float32)
        resample(image, row, reduction, x)
        if row[_ROTATE] != 0.0:
            rotate(x, row[_ANGLE])
        color_ops(x, row)
        flat, target = x.reshape(-1), out.reshape(-1)
        for j in range(flat.shape[0]):
            target[j] = np.uint8(min(max(flat[j] + f32(0.5), f32(0.0)), f32(255.0)))

    @numba.njit(cache=True, nogil=True, fastmath=True, parallel=True)
    def _normalize_views(images: Any, scales: Any, shifts: Any, out: Any) -> None:
        """out[i, c] = images[i, c] * scales[c] + shifts[c] (uint8 in, float32 out)."""
        n, channels = images.shape[0], images.shape[1]
        for item in prange(n * channels):
            i, ch = item // channels, item % channels
            source, target = images[i, ch].reshape(-1), out[i, ch].reshape(-1)
            s, t = scales[ch], shifts[ch]
            for j in range(source.shape[0]):
                target[j] = f32(source[j]) * s + t

    @numba.njit(cache=True, nogil=True, parallel=True)
    def _lookup_views(images: Any, table: Any, out: Any) -> None:
        """out[i, c] = table[images[i, c], c]: the 16-bit patterns of float16 / bfloat16."""
        n, channels = images.shape[0], images.shape[1]
        for item in prange(n * channels):
            i, ch = item // channels, item % channels
            source, target = images[i, ch].reshape(-1), out[i, ch].reshape(-1)
            for j in range(source.shape[0]):
                target[j] = table[source[j], ch]

    _KERNELS.update(
        coefficients=coefficients, resample=resample, rotate=rotate, color_ops=color_ops,
        augment_view=_augment_view, normalize_views=_normalize_views, lookup_views=_lookup_views,
        gaussian_taps=gaussian_taps,
    )  # fmt: skip


def augment_view(image: Any, reduction: int, row: Any, out: Any) -> None:
    """Makes one view of a decoded image, as the FFCV decoder does for each view.

    Args:
        image: (H, W, 3) uint8 image, decoded at ``1 / reduction`` of its full size.
        reduction: The JPEG DCT reduction it was decoded at (1, 2, 4 or 8).
        row: The view's parameter row (:data:`COLUMNS`, float64).
        out: (3, h, w) uint8 array the view is written into.
    """
    kernels()["augment_view"](image, reduction, row, out)


def normalize_views(images: Any, scales: Any, shifts: Any, out: Any) -> None:
    """``out = images * scales + shifts`` per channel: (N, 3, h, w) uint8 to float32.

    Args:
        images: (N, 3, h, w) uint8 views.
        scales: (3,) float32 per-channel factors (``1 / (255 std)``).
        shifts: (3,) float32 per-channel offsets (``-mean / std``).
        out: (N, 3, h, w) float32 array written in place.
    """
    kernels()["normalize_views"](images, scales, shifts, out)


def lookup_views(images: Any, table: Any, out: Any) -> None:
    """``out[i, c] = table[images[i, c], c]``: a per-channel lookup of 16-bit patterns.

    Args:
        images: (N, 3, h, w) uint8 views.
        table: (256, 3) uint16 patterns of the normalized values (float16 or bfloat16).
        out: (N, 3, h, w) uint16 array written in place.
    """
    kernels()["lookup_views"](images, table, out)
