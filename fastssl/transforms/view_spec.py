"""``ViewSpec``: the one description of how a single augmented view is made.

Every method's transform in ``fastssl.transforms`` is built from ViewSpecs, and every engine
compiles the same ViewSpec: ``ViewSpec.build_torchvision()`` here, DALI and FFCV pipelines
elsewhere. A ViewSpec is a frozen, plain dataclass of numbers, strings and tuples, so it
round-trips through ``to_dict``/``from_dict`` (and JSON/YAML) unchanged.

The operations always run in this order (the order of SimCLR, https://arxiv.org/abs/2002.05709,
and BYOL, https://arxiv.org/abs/2006.07733):

    random resized crop -> horizontal flip -> vertical flip -> rotation -> color jitter
    -> grayscale -> Gaussian blur -> solarization -> to float32 in [0, 1] -> normalize

Everything before the float conversion runs on uint8 tensors: a quarter of the memory
traffic of float32, and the same representation the DALI/FFCV decoders produce.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
from PIL.Image import Image
from torch import Tensor
from torchvision.transforms import v2

from fastssl.transforms.gaussian_blur import GaussianBlur
from fastssl.transforms.rotation import random_rotation_transform
from fastssl.transforms.solarize import RandomSolarization
from fastssl.transforms.utils import IMAGENET_NORMALIZE

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


@dataclass(frozen=True)
class ViewSpec:
    """Augmentation parameters of one view; defaults are a SimCLR view at 224 px.

    Strengths are the values handed to the operation (lightly's ``cj_strength * cj_bright``
    and so on are multiplied out before they get here). A probability of 0 removes the
    operation from the compiled pipeline.

    >>> spec = ViewSpec(crop_size=32, blur_prob=0.0)
    >>> view = spec.build_torchvision()
    >>> import torch
    >>> view(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape
    torch.Size([3, 32, 32])
    >>> ViewSpec.from_dict(spec.to_dict()) == spec
    True
    """

    # Output size of the random resized crop: int (square) or (height, width). None skips the
    # crop (the image is used whole), as in SwaV's view transform before the multi-crop.
    crop_size: int | tuple[int, int] | None = 224
    # (min, max) fraction of the image area that the crop covers; 0 < min <= max <= 1.
    crop_scale: tuple[float, float] = (0.08, 1.0)
    # (min, max) aspect ratio (width / height) of the crop, sampled log-uniformly; 0 < min <= max.
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    # Resampling filter of the crop's resize: "nearest", "bilinear" (SimCLR) or "bicubic" (DINO).
    interpolation: str = "bilinear"
    # Probability of a horizontal (left-right) flip.
    hf_prob: float = 0.5
    # Probability of a vertical (top-bottom) flip; useful for aerial or microscopy images.
    vf_prob: float = 0.0
    # Probability of a rotation.
    rr_prob: float = 0.0
    # None: rotate by 90 degrees; d: by an angle in [-d, d]; (lo, hi): in [lo, hi].
    # Counter-clockwise.
    rr_degrees: float | tuple[float, float] | None = None
    # Probability that color jitter is applied (as one block, in a random order of its parts).
    cj_prob: float = 0.8
    # Brightness factor drawn from [max(0, 1 - b), 1 + b]; b >= 0.
    cj_bright: float = 0.8
    # Contrast factor drawn from [max(0, 1 - c), 1 + c]; c >= 0.
    cj_contrast: float = 0.8
    # Saturation factor drawn from [max(0, 1 - s), 1 + s]; s >= 0.
    cj_sat: float = 0.8
    # Hue shift drawn from [-h, h] (fraction of the hue circle); 0 <= h <= 0.5.
    cj_hue: float = 0.2
    # Probability of converting to grayscale (the 3 channels are kept).
    gray_prob: float = 0.2
    # Probability of a Gaussian blur.
    blur_prob: float = 0.5
    # (min, max) blur standard deviation in pixels, drawn uniformly; 0 < min <= max.
    blur_sigmas: tuple[float, float] = (0.1, 2.0)
    # None: kernel sized to the drawn sigma (2 * ceil(3 sigma) + 1, the fast path); or a fixed
    # odd size. Either way it is clamped to what the image can pad.
    blur_kernel_size: int | None = None
    # Probability of solarization.
    solarize_prob: float = 0.0
    # Pixel values >= threshold (uint8 scale) are inverted; 0..256.
    solarize_threshold: int = 128
    # Per-channel mean subtracted after scaling to [0, 1]; None (with std None) skips Normalize.
    normalize_mean: tuple[float, ...] | None = tuple(IMAGENET_NORMALIZE["mean"])
    # Per-channel standard deviation (> 0) the image is divided by; None with mean None.
    normalize_std: tuple[float, ...] | None = tuple(IMAGENET_NORMALIZE["std"])

    def __post_init__(self) -> None:
        # Lists (from JSON/YAML) become tuples so that equality and hashing work.
        for name in ("crop_scale", "crop_ratio", "blur_sigmas", "normalize_mean", "normalize_std"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        for name in ("crop_size", "rr_degrees"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        size = self.crop_size
        if size is not None:
            sizes = (size,) if isinstance(size, int) else size
            if (
                isinstance(size, bool)
                or not isinstance(sizes, tuple)
                or len(sizes) not in (1, 2)
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)
            ):
                _fail("crop_size", size, "None, an int > 0 or a (height, width) pair of ints > 0")
        _check_range("crop_scale", self.crop_scale, low=0.0, high=1.0, low_open=True)
        _check_range("crop_ratio", self.crop_ratio, low=0.0, high=math.inf, low_open=True)
        if self.interpolation not in _INTERPOLATIONS:
            _fail("interpolation", self.interpolation, f"one of {_INTERPOLATIONS}")
        for name in ("hf_prob", "vf_prob", "rr_prob", "cj_prob", "gray_prob", "blur_prob"):
            _check_probability(name, getattr(self, name))
        _check_probability("solarize_prob", self.solarize_prob)
        degrees = self.rr_degrees
        if degrees is not None:
            if isinstance(degrees, tuple):
                _check_range("rr_degrees", degrees, low=-math.inf, high=math.inf)
            elif not _is_number(degrees) or degrees < 0:
                _fail("rr_degrees", degrees, "None, a number >= 0 or a (min, max) pair")
        for name in ("cj_bright", "cj_contrast", "cj_sat"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value < math.inf:
                _fail(name, value, "a finite number >= 0")
        if not _is_number(self.cj_hue) or not 0.0 <= self.cj_hue <= 0.5:
            _fail("cj_hue", self.cj_hue, "a number in [0, 0.5]")
        _check_range("blur_sigmas", self.blur_sigmas, low=0.0, high=math.inf, low_open=True)
        kernel = self.blur_kernel_size
        if kernel is not None and (not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0):
            _fail("blur_kernel_size", kernel, "None (sized to sigma) or an odd int >= 1")
        threshold = self.solarize_threshold
        if not isinstance(threshold, int) or not 0 <= threshold <= 256:
            _fail("solarize_threshold", threshold, "an int in [0, 256]")
        mean, std = self.normalize_mean, self.normalize_std
        if (mean is None) != (std is None):
            _fail(
                "normalize_std" if std is None else "normalize_mean",
                None,
                "None only together with the other of normalize_mean / normalize_std",
            )
        if mean is not None and std is not None:
            if not isinstance(mean, tuple) or not mean or not all(_is_number(m) for m in mean):
                _fail("normalize_mean", mean, "a non-empty sequence of numbers, or None")
            if (
                not isinstance(std, tuple)
                or len(std) != len(mean)
                or not all(_is_number(s) and s > 0 for s in std)
            ):
                _fail("normalize_std", std, f"{len(mean)} numbers > 0 (one per mean), or None")

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Returns the fields as a dict of plain Python values (tuples kept as tuples)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ViewSpec:
        """Builds a ViewSpec from ``to_dict``'s output (lists are accepted for tuples).

        Raises:
            ValueError: On a key that is not a field, naming it and the allowed keys.
        """
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"ViewSpec.from_dict got unknown key(s) {unknown}; allowed keys: {sorted(names)}."
            )
        return cls(**dict(data))

    def replace(self, **changes: Any) -> ViewSpec:
        """Returns a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_lightly_args(
        cls,
        *,
        input_size: int | tuple[int, int] | None = 224,
        min_scale: float = 0.08,
        max_scale: float = 1.0,
        interpolation: str = "bilinear",
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.8,
        cj_hue: float = 0.2,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 0.5,
        sigmas: tuple[float, float] = (0.1, 2),
        solarization_prob: float = 0.0,
        vf_prob: float = 0.0,
        hf_prob: float = 0.5,
        rr_prob: float = 0.0,
        rr_degrees: float | tuple[float, float] | None = None,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> ViewSpec:
        """Builds a ViewSpec from lightly's argument names (``cj_strength`` multiplied out).

        >>> ViewSpec.from_lightly_args(cj_strength=0.5, cj_bright=0.8).cj_bright
        0.4
        """
        return cls(
            crop_size=input_size,
            crop_scale=(min_scale, max_scale),
            interpolation=interpolation,
            hf_prob=hf_prob,
            vf_prob=vf_prob,
            rr_prob=rr_prob,
            rr_degrees=rr_degrees,
            cj_prob=cj_prob,
            cj_bright=cj_strength * cj_bright,
            cj_contrast=cj_strength * cj_contrast,
            cj_sat=cj_strength * cj_sat,
            cj_hue=cj_strength * cj_hue,
            gray_prob=random_gray_scale,
            blur_prob=gaussian_blur,
            blur_sigmas=(float(sigmas[0]), float(sigmas[1])),
            solarize_prob=solarization_prob,
            **normalize_fields(normalize),
        )

    # ------------------------------------------------------------------ torchvision engine
    def build_torchvision(self) -> Callable[[Tensor | Image], Tensor]:
        """Compiles the spec into a ``torchvision.transforms.v2`` pipeline.

        The pipeline takes a PIL image or a (C, H, W) uint8 tensor (float tensors in [0, 1]
        work too) and returns a plain float32 tensor of shape (C, crop_h, crop_w).
        Operations with probability 0 are left out.
        """
        ops: list[Callable[[Any], Any]] = [v2.ToImage()]
        if self.crop_size is not None:
            ops.append(
                v2.RandomResizedCrop(
                    size=self.crop_size,
                    scale=self.crop_scale,
                    ratio=self.crop_ratio,
                    interpolation=v2.InterpolationMode(self.interpolation),
                    antialias=True,
                )
            )
        if self.hf_prob > 0:
            ops.append(v2.RandomHorizontalFlip(p=self.hf_prob))
        if self.vf_prob > 0:
            ops.append(v2.RandomVerticalFlip(p=self.vf_prob))
        if self.rr_prob > 0:
            ops.append(random_rotation_transform(self.rr_prob, self.rr_degrees))
        jitter = (self.cj_bright, self.cj_contrast, self.cj_sat, self.cj_hue)
        if self.cj_prob > 0 and any(j > 0 for j in jitter):
            color_jitter = v2.ColorJitter(
                brightness=self.cj_bright or None,
                contrast=self.cj_contrast or None,
                saturation=self.cj_sat or None,
                hue=self.cj_hue or None,
            )
            ops.append(v2.RandomApply([color_jitter], p=self.cj_prob))
        if self.gray_prob > 0:
            ops.append(v2.RandomGrayscale(p=self.gray_prob))
        if self.blur_prob > 0:
            ops.append(
                GaussianBlur(
                    prob=self.blur_prob,
                    sigmas=self.blur_sigmas,
                    kernel_size=self.blur_kernel_size,
                )
            )
        if self.solarize_prob > 0:
            ops.append(
                RandomSolarization(prob=self.solarize_prob, threshold=self.solarize_threshold)
            )
        ops.append(v2.ToDtype(torch.float32, scale=True))
        if self.normalize_mean is not None and self.normalize_std is not None:
            ops.append(v2.Normalize(mean=list(self.normalize_mean), std=list(self.normalize_std)))
        # A plain Tensor (not tv_tensors.Image) keeps collate and torch.compile simple.
        ops.append(_as_plain_tensor)
        return v2.Compose(ops)


def _as_plain_tensor(image: Tensor) -> Tensor:
    return image.as_subclass(Tensor)


def normalize_fields(normalize: Mapping[str, Sequence[float]] | None) -> dict[str, Any]:
    """Maps lightly's ``normalize={"mean": [...], "std": [...]}`` argument to ViewSpec fields.

    Args:
        normalize: lightly-style dict with keys "mean" and "std", or None/empty for no
            normalisation.

    Returns:
        ``{"normalize_mean": ..., "normalize_std": ...}``.
    """
    if not normalize:
        return {"normalize_mean": None, "normalize_std": None}
    missing = {"mean", "std"} - set(normalize)
    if missing:
        raise ValueError(
            f"normalize must be None or a dict with keys 'mean' and 'std', got {dict(normalize)!r}."
        )
    return {
        "normalize_mean": tuple(float(m) for m in normalize["mean"]),
        "normalize_std": tuple(float(s) for s in normalize["std"]),
    }


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fail(name: str, value: object, allowed: str) -> NoReturn:
    raise ValueError(f"ViewSpec.{name} must be {allowed}, got {value!r}.")


def _check_probability(name: str, value: object) -> None:
    if not _is_number(value) or not 0.0 <= value <= 1.0:  # type: ignore[operator]
        _fail(name, value, "a probability in [0, 1]")


def _check_range(
    name: str, value: object, *, low: float, high: float, low_open: bool = False
) -> None:
    opening = "(" if low_open else "["
    allowed = f"a (min, max) pair with min <= max, both in {opening}{low}, {high}]"
    if not isinstance(value, tuple) or len(value) != 2 or not all(_is_number(v) for v in value):
        _fail(name, value, allowed)
    lo, hi = float(value[0]), float(value[1])
    low_ok = lo > low if low_open else lo >= low
    if not (low_ok and lo <= hi <= high):
        _fail(name, value, allowed)
