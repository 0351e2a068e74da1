"""Numba kernels of the batched color and filter ops: one compiled pass per operation.

Same operations and arithmetic as :mod:`fastssl.transforms.batched` (the torch ops), for
one image at a time: each function takes a (1, 3, H, W) contiguous float32 tensor on the
[0, 255] scale and changes it in place. A torch op is a separate pass over memory per
elementwise step (the hue rotation alone takes about 35); a kernel does the whole
operation in one loop that LLVM vectorizes, several times faster on a CPU.

Used by :mod:`fastssl.data.engines.batched` when numba is installed (``pip install numba``;
it comes with the ``ffcv`` extra); :func:`available` tells. Compiled on first use, cached on
disk (numba's ``cache=True``) in the user's cache folder, :func:`cache_dir` (never in the
installed package, which may be read-only or shared), and compiled in the main process by
:func:`warm_up` before DataLoader workers are forked, so that workers inherit the machine
code.

>>> import torch
>>> if available():
...     x = torch.full((1, 3, 2, 2), 100.0)
...     _ = adjust_brightness_(x, 1.5)
...     print(x[0, 0, 0, 0].item())
... else:
...     print(150.0)
150.0
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fastssl.transforms.batched import LUMA, MAX_VALUE, blur_kernel_sizes, gaussian_kernels
from fastssl.utils.cache import user_cache_dir


def available() -> bool:
    """Whether numba is installed (the kernels can run)."""
    return importlib.util.find_spec("numba") is not None


_KERNELS: dict[str, Any] = {}


def cache_dir() -> str:
    """Where numba caches the compiled kernels.

    ``$NUMBA_CACHE_DIR`` when set (numba's own setting), else
    ``$XDG_CACHE_HOME/fastssl/numba`` (``~/.cache/fastssl/numba`` by default).
    """
    explicit = os.environ.get("NUMBA_CACHE_DIR")
    if explicit:
        return explicit
    return os.path.join(user_cache_dir(), "numba")


@contextmanager
def _caching_in(folder: str) -> Iterator[None]:
    """Points numba's cache at ``folder`` while kernels are declared.

    numba picks a function's cache location when it is decorated: its first choice is
    ``numba.config.CACHE_DIR`` (``NUMBA_CACHE_DIR``), else ``__pycache__`` beside the
    source. Setting it only around our declarations keeps other numba users unaffected.
    """
    from numba.core import config

    # numba.core.config sets its settings at import: mypy sees no attribute.
    previous = config.CACHE_DIR  # type: ignore[attr-defined]
    config.CACHE_DIR = previous or folder  # type: ignore[attr-defined]
    try:
        yield
    finally:
        config.CACHE_DIR = previous  # type: ignore[attr-defined]


def _compile() -> dict[str, Any]:
    """The jitted kernels, built once per process (numba is imported here, lazily)."""
    if _KERNELS:
        return _KERNELS
    with _caching_in(cache_dir()):
        return _declare()


def _declare() -> dict[str, Any]:
    """Declares the jitted kernels into :data:`_KERNELS` (compiled on first call)."""
    import numba

    jit = numba.njit(cache=True, fastmath=True, nogil=True, boundscheck=False)
    f32 = np.float32
    top, zero, one = f32(MAX_VALUE), f32(0.0), f32(1.0)
    wr, wg, wb = f32(LUMA[0]), f32(LUMA[1]), f32(LUMA[2])

    @jit
    def scale(x: Any, factor: Any, clamp: bool) -> None:
        flat = x.reshape(-1)
        for i in range(flat.shape[0]):
            v = flat[i] * factor
            flat[i] = min(v, top) if clamp else v

    @jit
    def luma_mean(x: Any) -> Any:
        total = 0.0
        for i in range(x.shape[1]):
            total += wr * x[0, i] + wg * x[1, i] + wb * x[2, i]
        return f32(total / x.shape[1])

    @jit
    def blend_constant(x: Any, value: Any, weight: Any, clamp: bool) -> None:
        flat = x.reshape(-1)
        for i in range(flat.shape[0]):
            v = flat[i] + weight * (value - flat[i])
            flat[i] = min(max(v, zero), top) if clamp else v

    @jit
    def blend_gray(x: Any, weight: Any, clamp: bool) -> None:
        for i in range(x.shape[1]):
            r, g, b = x[0, i], x[1, i], x[2, i]
            gray = wr * r + wg * g + wb * b
            r, g, b = r + weight * (gray - r), g + weight * (gray - g), b + weight * (gray - b)
            if clamp:
                r, g, b = min(max(r, zero), top), min(max(g, zero), top), min(max(b, zero), top)
            x[0, i], x[1, i], x[2, i] = r, g, b

    @jit
    def gray(x: Any) -> None:
        for i in range(x.shape[1]):
            v = wr * x[0, i] + wg * x[1, i] + wb * x[2, i]
            x[0, i], x[1, i], x[2, i] = v, v, v

    six, sixth, two, four, tiny = f32(6.0), f32(1.0 / 6.0), f32(2.0), f32(4.0), f32(1e-12)
    off_r, off_g, off_b = f32(5.0), f32(3.0), f32(1.0)

    @jit
    def trapezoid(k: Any) -> Any:
        k -= six * math.floor(k * sixth)  # mod 6
        return min(max(min(k, four - k), zero), one)

    @jit
    def hue(x: Any, shift6: Any) -> None:
        for i in range(x.shape[1]):
            r, g, b = x[0, i], x[1, i], x[2, i]
            high = max(r, max(g, b))
            spread = high - min(r, min(g, b))
            # 6 * hue times the spread, by maximum channel (selects, no branches).
            h = r - g + four * spread
            h = b - r + two * spread if g == high else h
            h = g - b if r == high else h
            h = h / max(spread, tiny) + shift6
            x[0, i] = high - spread * trapezoid(h + off_r)
            x[1, i] = high - spread * trapezoid(h + off_g)
            x[2, i] = high - spread * trapezoid(h + off_b)

    @jit
    def solarize(x: Any, threshold: Any) -> None:
        flat = x.reshape(-1)
        for i in range(flat.shape[0]):
            v = flat[i]
            flat[i] = top - v if v >= threshold else v

    @jit
    def blur_row(source: Any, weights: Any, out: Any) -> None:
        # out[j] = sum_t weights[t] * source[j + t]: taps outer, columns inner (vectorized).
        for j in range(out.shape[0]):
            out[j] = weights[0] * source[j]
        for t in range(1, weights.shape[0]):
            w = weights[t]
            for j in range(out.shape[0]):
                out[j] += w * source[j + t]

    @jit
    def blur(x: Any, weights: Any) -> None:
        # x: (C, H, W); separable, reflect padding (no edge repeat), like torch's "reflect".
        channels, height, width = x.shape
        taps = weights.shape[0]
        pad = taps // 2
        row = np.empty(width + 2 * pad, dtype=np.float32)
        rows = np.empty((height + 2 * pad, width), dtype=np.float32)
        for c in range(channels):
            image = x[c]
            for y in range(height):  # horizontal pass into rows[pad + y]
                row[pad : pad + width] = image[y]
                for m in range(1, pad + 1):
                    row[pad - m] = image[y, m]
                    row[pad + width - 1 + m] = image[y, width - 1 - m]
                blur_row(row, weights, rows[pad + y])
            for m in range(1, pad + 1):  # reflected rows above and below
                rows[pad - m] = rows[pad + m]
                rows[pad + height - 1 + m] = rows[pad + height - 1 - m]
            # Vertical pass: each output row is a weighted sum of whole rows.
            for y in range(height):
                out = image[y]
                source = rows[y]
                w = weights[0]
                for j in range(width):
                    out[j] = w * source[j]
                for t in range(1, taps):
                    source = rows[y + t]
                    w = weights[t]
                    for j in range(width):
                        out[j] += w * source[j]

    @jit
    def affine(x: Any, scales: Any, shifts: Any, out: Any) -> None:
        for c in range(x.shape[0]):
            s, t = scales[c], shifts[c]
            for i in range(x.shape[1]):
                out[c, i] = x[c, i] * s + t

    _KERNELS.update(
        scale=scale, luma_mean=luma_mean, blend_constant=blend_constant, blend_gray=blend_gray,
        gray=gray, hue=hue, solarize=solarize, blur=blur, affine=affine,
    )  # fmt: skip
    return _KERNELS


def _planes(x: Tensor) -> Any:
    """(1, 3, H, W) contiguous float32 tensor -> (3, H*W) numpy view of the same memory."""
    if x.shape[0] != 1 or x.dtype != torch.float32 or not x.is_contiguous():
        raise ValueError(
            f"the numba kernels take one contiguous float32 image (1, 3, H, W), got "
            f"{tuple(x.shape)} {x.dtype} contiguous={x.is_contiguous()}"
        )
    return x.numpy().reshape(x.shape[1], -1)


def adjust_brightness_(x: Tensor, factor: float) -> Tensor:
    """:func:`fastssl.transforms.batched.adjust_brightness_` for one image."""
    _compile()["scale"](_planes(x), np.float32(factor), factor > 1.0)
    return x


def adjust_contrast_(x: Tensor, factor: float) -> Tensor:
    """:func:`fastssl.transforms.batched.adjust_contrast_` for one image."""
    kernels = _compile()
    planes = _planes(x)
    mean = kernels["luma_mean"](planes)
    kernels["blend_constant"](planes, mean, np.float32(1.0 - factor), factor > 1.0)
    return x


def adjust_saturation_(x: Tensor, factor: float) -> Tensor:
    """:func:`fastssl.transforms.batched.adjust_saturation_` for one image."""
    _compile()["blend_gray"](_planes(x), np.float32(1.0 - factor), factor > 1.0)
    return x


def adjust_hue_(x: Tensor, shift: float) -> Tensor:
    """:func:`fastssl.transforms.batched.adjust_hue_` for one image."""
    _compile()["hue"](_planes(x), np.float32(6.0 * shift))
    return x


def to_grayscale_(x: Tensor) -> Tensor:
    """:func:`fastssl.transforms.batched.to_grayscale_` for one image."""
    _compile()["gray"](_planes(x))
    return x


def solarize_(x: Tensor, threshold: float) -> Tensor:
    """:func:`fastssl.transforms.batched.solarize_` for one image."""
    _compile()["solarize"](_planes(x), np.float32(threshold))
    return x


def gaussian_blur_(x: Tensor, sigma: float, kernel_size: int | None = None) -> Tensor:
    """:func:`fastssl.transforms.batched.gaussian_blur_` for one image and its sigma."""
    _planes(x)  # checks the layout
    height, width = x.shape[-2:]
    sigmas = torch.tensor([sigma])
    sizes = blur_kernel_sizes(sigmas, height, width, kernel_size)
    if sizes[0] > 1:
        weights = gaussian_kernels(sigmas, sizes)[0].numpy()
        _compile()["blur"](x[0].numpy(), weights)
    return x


def normalize(x: Tensor, scale: Tensor, shift: Tensor, out: Tensor) -> Tensor:
    """:func:`fastssl.transforms.batched.normalize` for one image into a float32 ``out``."""
    if out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError(f"normalize kernel writes contiguous float32, got {out.dtype}")
    planes = _planes(x)
    _compile()["affine"](
        planes,
        scale.reshape(-1).numpy(),
        shift.reshape(-1).numpy(),
        out.numpy().reshape(planes.shape),
    )
    return out


def warm_up() -> None:
    """Compiles (or loads from numba's cache) every kernel, on a tiny image."""
    x = torch.full((1, 3, 4, 4), 100.0)
    adjust_brightness_(x, 1.5)
    adjust_contrast_(x, 0.5)
    adjust_saturation_(x, 1.5)
    adjust_hue_(x, 0.1)
    to_grayscale_(x)
    solarize_(x, 128)
    gaussian_blur_(x, 0.5)
    ones = torch.ones(1, 3, 1, 1)
    normalize(x, ones, ones, torch.empty_like(x))
