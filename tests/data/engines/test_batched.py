"""The torch backend's batched engine draws what the torchvision engine draws, and computes
what torchvision computes for those draws.

* Distributions: crop boxes against torchvision's ``RandomResizedCrop.get_params`` (two-sample
  KS tests, p > 1e-3, on the area fraction, log aspect ratio and centre), rates of every
  random op (binomial, 4 sigma), jitter orders (each of the 24 within 4 sigma), factor ranges
  (KS against the uniform law).
* Values: the uint8 geometric stage is bit-identical to torchvision's functional ops for
  the same draws; the whole view equals torchvision's float functional pipeline for the same
  draws within 1e-4 (normalized units); the reduced-DCT decode is within a few levels of the
  full decode.
* Structure, dtypes and errors of the collate; seeding (same seed and epoch, same batches,
  whatever the number of workers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from fastssl.data.dataset import LightlyDataset, UnreadableImageError, open_image
from fastssl.data.engines.batched import (
    BatchedViewCollate,
    DecodedViews,
    ViewDecoder,
    draft_scale,
)
from fastssl.transforms import batched_kernels
from fastssl.transforms.gaussian_blur import gaussian_blur
from fastssl.transforms.view_params import ViewParams
from fastssl.transforms.view_spec import ViewSpec

PLAIN = ViewSpec(
    crop_size=None, hf_prob=0.0, cj_prob=0.0, gray_prob=0.0, blur_prob=0.0,
    normalize_mean=None, normalize_std=None,
)  # fmt: skip


# ------------------------------------------------------------------------- distributions
def _tagged(width: int = 60, height: int = 44) -> Image.Image:
    x = np.arange(width, dtype=np.uint8)[None, :] * 4
    y = np.arange(height, dtype=np.uint8)[:, None] * 5
    noise = np.random.default_rng(0).integers(0, 60, (height, width), dtype=np.uint8)
    pixels = np.stack(np.broadcast_arrays(x, y, noise), axis=-1)
    return Image.fromarray(np.ascontiguousarray(pixels))


def _torchvision_geometry(image: torch.Tensor, spec: ViewSpec, p: ViewParams) -> torch.Tensor:
    """The torchvision engine's uint8 geometric ops for draws ``p``."""
    if spec.crop_size is not None:
        size = [spec.crop_size] * 2 if isinstance(spec.crop_size, int) else list(spec.crop_size)
        image = F.resized_crop(
            image, p.top, p.left, p.height, p.width, size,
            interpolation=InterpolationMode(spec.interpolation), antialias=True,
        )  # fmt: skip
    if p.hflip:
        image = F.horizontal_flip(image)
    if p.vflip:
        image = F.vertical_flip(image)
    if p.rotation is not None:
        if p.rotation == 90.0 and image.shape[-1] == image.shape[-2]:
            image = torch.rot90(image, 1, dims=(-2, -1))
        else:
            image = F.rotate(image, p.rotation)
    return image


@pytest.mark.parametrize(
    "spec",
    [
        ViewSpec(crop_size=24, hf_prob=0.5, vf_prob=0.5),
        ViewSpec(crop_size=(16, 40), interpolation="bicubic", rr_prob=0.5),
        ViewSpec(crop_size=32, interpolation="nearest", rr_prob=0.5, rr_degrees=(-40.0, 40.0)),
        ViewSpec(crop_size=None, rr_prob=1.0, hf_prob=0.5),
    ],
    ids=["bilinear-flips", "bicubic-tuple-quarter-turn", "nearest-degrees", "no-crop"],
)
def test_geometric_stage_is_torchvision_for_the_same_draws(spec: ViewSpec) -> None:
    image = _tagged()
    tensor = F.pil_to_tensor(image)
    decoder = ViewDecoder([spec, spec])
    for key in range(8):
        decoder.reseed(0, 0, key)
        views = decoder(image)
        for view, p in zip(views.images, views.params, strict=True):
            assert view.dtype == torch.uint8
            torch.testing.assert_close(view, _torchvision_geometry(tensor, spec, p), rtol=0, atol=0)


def _torchvision_colors(view: torch.Tensor, spec: ViewSpec, p: ViewParams) -> torch.Tensor:
    """torchvision's float functional ops for draws ``p``: the same ops, no uint8 rounding."""
    x = view.float() / 255.0
    ops = {
        0: lambda x: F.adjust_brightness(x, p.brightness),
        1: lambda x: F.adjust_contrast(x, p.contrast),
        2: lambda x: F.adjust_saturation(x, p.saturation),
        3: lambda x: F.adjust_hue(x, p.hue),
    }
    for op in p.jitter or ():
        x = ops[op](x)
    if p.gray:
        x = F.rgb_to_grayscale(x, num_output_channels=3)
    if p.blur_sigma is not None:
        x = gaussian_blur(x, p.blur_sigma, spec.blur_kernel_size)
    if p.solarize:
        x = F.solarize(x, spec.solarize_threshold / 255.0)
    if spec.normalize_mean is not None and spec.normalize_std is not None:
        x = F.normalize(x, list(spec.normalize_mean), list(spec.normalize_std))
    return x


@pytest.mark.parametrize(
    "spec",
    [
        ViewSpec(crop_size=24),  # SimCLR's ops at a small size
        ViewSpec(
            crop_size=24,
            cj_prob=1.0,
            gray_prob=0.5,
            blur_prob=1.0,
            blur_kernel_size=5,
            solarize_prob=0.5,
            solarize_threshold=100,
        ),
        ViewSpec(crop_size=20, cj_prob=1.0, cj_hue=0.0, normalize_mean=None, normalize_std=None),
    ],
    ids=["simclr", "every-op", "no-hue-no-normalize"],
)
@pytest.mark.parametrize(
    "kernels",
    [
        "torch",
        pytest.param(
            "numba",
            marks=pytest.mark.skipif(not batched_kernels.available(), reason="needs numba"),
        ),
    ],
)
def test_views_equal_torchvision_float_ops_for_the_same_draws(spec: ViewSpec, kernels) -> None:
    image = _tagged()
    decoder = ViewDecoder([spec])
    samples = []
    for key in range(24):
        decoder.reseed(3, 0, key)
        samples.append((decoder(image), 0, str(key)))
    (views,), _, _ = BatchedViewCollate([spec], kernels=kernels)(samples)
    for row, (sample, _, _) in enumerate(samples):
        expected = _torchvision_colors(sample.images[0], spec, sample.params[0])
        torch.testing.assert_close(views[row], expected, atol=1e-4, rtol=0)


def test_reduced_dct_decode_is_used_when_every_crop_allows_it(tmp_path: Path) -> None:
    height, width = 600, 800
    x = np.linspace(0, 255, width)[None, :]
    y = np.linspace(0, 255, height)[:, None]
    pixels = np.stack(np.broadcast_arrays(x, y, (x + y) / 2), axis=-1).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    spec = ViewSpec(crop_size=64, crop_scale=(0.6, 1.0), cj_prob=0.0, gray_prob=0.0,
                    blur_prob=0.0, normalize_mean=None, normalize_std=None)  # fmt: skip
    decoder = ViewDecoder([spec, spec])
    requested = []
    for key in range(6):
        image = open_image(str(path))
        draft = image.draft

        def spy(mode: str, size: tuple[int, int], draft=draft) -> object:
            requested.append(size)
            return draft(mode, size)

        image.draft = spy  # type: ignore[method-assign]
        decoder.reseed(0, 0, key)
        reduced = decoder(image)
        assert draft_scale([spec, spec], reduced.params) >= 4  # crops >= 0.6 * 480 000 px
        decoder.reseed(0, 0, key)
        full = decoder(Image.open(path).convert("RGB"))  # decoded already: no draft
        for a, b in zip(reduced.images, full.images, strict=True):
            assert a.shape == b.shape == (3, 64, 64)
            assert (a.float() - b.float()).abs().mean() < 2.0  # levels, out of 255
    assert len(requested) == 6 and all(size[0] <= width // 4 for size in requested)


# ------------------------------------------------------------------ structure and errors
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_collate_structure_multi_crop_and_dtypes(dtype: torch.dtype) -> None:
    specs = [ViewSpec(crop_size=32)] * 2 + [
        ViewSpec(crop_size=(16, 12), crop_scale=(0.05, 0.4))
    ] * 3
    decoder = ViewDecoder(specs)
    samples = [(decoder(_tagged()), index % 3, f"k{index}") for index in range(5)]
    views, targets, keys = BatchedViewCollate(specs, dtype)(samples)
    assert [tuple(v.shape) for v in views] == [(5, 3, 32, 32)] * 2 + [(5, 3, 16, 12)] * 3
    assert all(v.dtype == dtype and torch.isfinite(v.float()).all() for v in views)
    assert targets.dtype == torch.long and targets.tolist() == [0, 1, 2, 0, 1]
    assert keys == ["k0", "k1", "k2", "k3", "k4"]


def test_collate_names_what_is_wrong() -> None:
    spec = PLAIN
    decoder = ViewDecoder([spec])
    small, large = decoder(_tagged(20, 10)), decoder(_tagged(30, 10))
    with pytest.raises(ValueError, match=r"with crop_size=None all images of a batch need one"):
        BatchedViewCollate([spec])([(small, 0, "a"), (large, 0, "b")])
    with pytest.raises(ValueError, match=r"collates the output of ViewDecoder"):
        BatchedViewCollate([spec])([([torch.zeros(3, 4, 4)], 0, "a")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"dtype=torch.int64 is not supported"):
        BatchedViewCollate([spec], torch.int64)
    with pytest.raises(ValueError, match=r"kernels='cuda' is unknown"):
        BatchedViewCollate([spec], kernels="cuda")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"a PIL image or a \(3, H, W\) uint8 tensor"):
        decoder(torch.zeros(3, 4, 4))
    assert isinstance(decoder(torch.zeros(1, 4, 5, dtype=torch.uint8)), DecodedViews)


def test_an_unreadable_jpeg_is_skipped_or_raised_with_lazy_decoding(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        _tagged().save(tmp_path / f"{name}.jpg", quality=90)
    broken = tmp_path / "b.jpg"
    broken.write_bytes(broken.read_bytes()[:400])  # header intact, pixels cut off
    decoder = ViewDecoder([ViewSpec(crop_size=8)])
    with pytest.warns(UserWarning, match=r"skipping unreadable image '.*b\.jpg'"):
        views, _, name = LightlyDataset(str(tmp_path), transform=decoder)[1]
    assert name == "c.jpg" and isinstance(views, DecodedViews)
    with pytest.raises(UnreadableImageError, match=r"b\.jpg"):
        LightlyDataset(str(tmp_path), transform=decoder, strict=True)[1]
