"""The random parameters of a view, drawn as the torchvision engine draws them.

A :class:`~fastssl.transforms.view_spec.ViewSpec` says which augmentations a view gets and
with which probabilities and ranges; :func:`draw_view_params` draws one sample's values of
all of them at once (crop box, flips, rotation, jitter order and factors, grayscale, blur
sigma, solarization) from a seeded ``random.Random``, with the distributions of
``ViewSpec.build_torchvision``'s ops. The batched torch engine
(:mod:`fastssl.data.engines.batched`) draws here and then applies the values; DALI and
FFCV draw the same distributions inside their own graphs (tests/data/engines/dali checks
that they agree).

Example:
    >>> params = draw_view_params(ViewSpec(crop_size=8), 20, 10, random.Random(0))
    >>> params.height <= 10 and params.width <= 20
    True
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from fastssl.transforms.view_spec import ViewSpec

# Color jitter operations, in torchvision ColorJitter's numbering.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


@dataclass(frozen=True)
class ViewParams:
    """The random draws of one view of one sample.

    Attributes:
        top, left, height, width: Crop box in the pixels of the full-size image (the whole
            image when the ViewSpec has no crop).
        hflip, vflip: Flips.
        rotation: Counter-clockwise angle in degrees, or None.
        jitter: The enabled color jitter operations (``BRIGHTNESS`` ... ``HUE``) in the
            order they run, or None when jitter is not applied.
        brightness, contrast, saturation, hue: The jitter factors (1, 1, 1, 0 when unused).
        gray: Converted to grayscale.
        blur_sigma: Standard deviation of the blur, or None.
        solarize: Solarized.
    """

    top: int
    left: int
    height: int
    width: int
    hflip: bool = False
    vflip: bool = False
    rotation: float | None = None
    jitter: tuple[int, ...] | None = None
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0
    gray: bool = False
    blur_sigma: float | None = None
    solarize: bool = False


def random_resized_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: random.Random,
) -> tuple[int, int, int, int]:
    """A crop box drawn like torchvision's ``RandomResizedCrop`` (``make_params``).

    Up to 10 tries of an area fraction uniform in ``scale`` and an aspect ratio
    (width / height) log-uniform in ``ratio``, rounded to whole pixels, placed uniformly;
    when none fits, the largest centred crop within ``ratio``.

    Args:
        width: Image width in pixels.
        height: Image height in pixels.
        scale: (min, max) area fraction.
        ratio: (min, max) aspect ratio.
        rng: Source of randomness.

    Returns:
        ``(top, left, crop_height, crop_width)``.

    >>> random_resized_crop_box(100, 80, (1.0, 1.0), (1.25, 1.25), random.Random(0))
    (0, 0, 80, 100)
    """
    area = width * height
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_low, log_high))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _enabled_jitter(spec: ViewSpec) -> list[int]:
    if spec.cj_prob <= 0:
        return []
    strengths = (spec.cj_bright, spec.cj_contrast, spec.cj_sat, spec.cj_hue)
    return [op for op, strength in enumerate(strengths) if strength > 0]


def draw_view_params(spec: ViewSpec, width: int, height: int, rng: random.Random) -> ViewParams:
    """Draws every random parameter of one view, as the torchvision engine would.

    Each operation is drawn with the probability and range of
    :meth:`ViewSpec.build_torchvision`'s op (``RandomResizedCrop``, ``RandomHorizontalFlip``,
    ``RandomVerticalFlip``, the rotation, ``RandomApply(ColorJitter)``, ``RandomGrayscale``,
    ``GaussianBlur``, ``RandomSolarization``).

    Args:
        spec: The view.
        width: Width of the full-size image.
        height: Height of the full-size image.
        rng: Source of randomness.

    Returns:
        The view's parameters.

    >>> params = draw_view_params(ViewSpec(crop_size=8), 20, 10, random.Random(0))
    >>> 0 < params.width <= 20 and 0 < params.height <= 10
    True
    """
    if spec.crop_size is None:
        box = (0, 0, height, width)
    else:
        box = random_resized_crop_box(width, height, spec.crop_scale, spec.crop_ratio, rng)
    values: dict[str, Any] = {}
    values["hflip"] = spec.hf_prob > 0 and rng.random() < spec.hf_prob
    values["vflip"] = spec.vf_prob > 0 and rng.random() < spec.vf_prob
    if spec.rr_prob > 0 and rng.random() < spec.rr_prob:
        degrees = spec.rr_degrees
        if degrees is None:
            values["rotation"] = 90.0
        else:
            low, high = degrees if isinstance(degrees, tuple) else (-degrees, degrees)
            values["rotation"] = rng.uniform(float(low), float(high))
    enabled = _enabled_jitter(spec)
    if enabled and rng.random() < spec.cj_prob:
        order = rng.sample(range(4), 4)
        values["jitter"] = tuple(op for op in order if op in enabled)
        for op, name, strength in (
            (BRIGHTNESS, "brightness", spec.cj_bright),
            (CONTRAST, "contrast", spec.cj_contrast),
            (SATURATION, "saturation", spec.cj_sat),
        ):
            if op in enabled:
                values[name] = rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength)
        if HUE in enabled:
            values["hue"] = rng.uniform(-spec.cj_hue, spec.cj_hue)
    values["gray"] = spec.gray_prob > 0 and rng.random() < spec.gray_prob
    if spec.blur_prob > 0 and rng.random() < spec.blur_prob:
        values["blur_sigma"] = rng.uniform(*spec.blur_sigmas)
    values["solarize"] = spec.solarize_prob > 0 and rng.random() < spec.solarize_prob
    return ViewParams(*box, **values)
