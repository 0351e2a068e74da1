from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.transforms as T_v1
from lightly.transforms import SimCLRViewTransform as LightlySimCLRViewTransform
from lightly.transforms.torchvision_v2_compatibility import ToTensor as LightlyToTensor
from lightly.utils import debug as lightly_debug
from PIL import Image
from torchvision.transforms import v2 as T_v2

from fastssl.transforms import MultiViewTransform, SimCLRTransform, SimCLRViewTransform
from fastssl.transforms.torchvision_v2_compatibility import ToTensor
from fastssl.utils import debug

NORMALIZE = {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}


def _image(width: int = 12, height: int = 12, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("shape", [(4, 3), (32, 8), (100, 64)])
def test_std_of_l2_normalized_matches_lightly(shape: tuple[int, int]) -> None:
    z = torch.randn(shape, generator=torch.Generator().manual_seed(shape[0]))
    torch.testing.assert_close(debug.std_of_l2_normalized(z), lightly_debug.std_of_l2_normalized(z))


def test_std_of_l2_normalized_collapse_and_isotropic() -> None:
    assert debug.std_of_l2_normalized(torch.ones(16, 8) * 3.0).item() == pytest.approx(
        0.0, abs=1e-7
    )
    z = torch.randn(20000, 64, generator=torch.Generator().manual_seed(0))
    assert debug.std_of_l2_normalized(z).item() == pytest.approx(64**-0.5, rel=0.02)


def test_std_of_l2_normalized_has_no_gradient() -> None:
    z = torch.randn(4, 3, requires_grad=True)
    assert not debug.std_of_l2_normalized(z).requires_grad


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4)])
def test_std_of_l2_normalized_rejects_other_ranks(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="two dimensions"):
        debug.std_of_l2_normalized(torch.randn(shape))


# lightly 1.6 recognises torchvision v2 pipelines and its own ToTensor only.
DETERMINISTIC_PIPELINES: list[Any] = [
    T_v2.Compose(
        [T_v2.Resize(8), T_v2.CenterCrop(6), LightlyToTensor(), T_v2.Normalize(**NORMALIZE)]
    ),
    T_v2.Compose([T_v2.Grayscale(3), LightlyToTensor(), T_v2.Normalize(**NORMALIZE)]),
    T_v2.Resize(5),
    LightlyToTensor(),
]


@pytest.mark.parametrize("transform", DETERMINISTIC_PIPELINES)
def test_apply_transform_without_normalize_matches_lightly(transform: Any) -> None:
    image = _image(14, 10)
    ours = debug.apply_transform_without_normalize(image, transform)
    theirs = lightly_debug.apply_transform_without_normalize(image, transform)
    assert isinstance(ours, Image.Image) and isinstance(theirs, Image.Image)
    assert ours.size == theirs.size and ours.mode == theirs.mode
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))


@pytest.mark.parametrize(
    "to_tensor",
    [
        [T_v1.ToTensor()],
        [ToTensor()],
        [T_v2.PILToTensor(), T_v1.ConvertImageDtype(torch.float32)],
        [T_v2.ToImage(), T_v2.ToDtype(torch.float32, scale=True), T_v2.ToPureTensor()],
    ],
)
def test_apply_transform_without_normalize_skips_every_tensor_conversion(
    to_tensor: list[Any],
) -> None:
    image = _image(14, 10)
    pipeline = T_v1.Compose(
        [T_v1.Resize(8), T_v1.CenterCrop(6), *to_tensor, T_v1.Normalize(**NORMALIZE)]
    )
    ours = debug.apply_transform_without_normalize(image, pipeline)
    expected = T_v1.CenterCrop(6)(T_v1.Resize(8)(image))
    assert isinstance(ours, Image.Image) and ours.size == (6, 6)
    assert np.array_equal(np.asarray(ours), np.asarray(expected))


def _no_random_view_kwargs() -> dict[str, Any]:
    # min_scale=1 on a square image: the random resized crop always takes the whole image.
    return dict(
        input_size=6, cj_prob=0.0, min_scale=1.0, random_gray_scale=0.0, gaussian_blur=0.0,
        hf_prob=0.0, normalize=NORMALIZE,
    )  # fmt: skip


def test_fastssl_view_transform_gives_lightlys_image() -> None:
    image = _image(12, 12)
    ours = debug.apply_transform_without_normalize(
        image, SimCLRViewTransform(**_no_random_view_kwargs())
    )
    theirs = lightly_debug.apply_transform_without_normalize(
        image, LightlySimCLRViewTransform(**_no_random_view_kwargs())
    )
    assert isinstance(ours, Image.Image) and ours.size == (6, 6) and ours.mode == "RGB"
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))
    assert np.array_equal(np.asarray(ours), np.asarray(image.resize((6, 6), Image.BILINEAR)))


@pytest.mark.parametrize("seed", range(4))
def test_view_without_normalize_keeps_the_augmented_pixels(seed: int) -> None:
    """The augmentations run (on PIL) while tensor conversion and normalisation are
    skipped: normalising the result gives the transform's own output for the same draws."""
    # Colour jitter and blur are left out: their PIL and tensor implementations round
    # differently. Crop, flip and grayscale are random and must take the same draws.
    view = SimCLRViewTransform(
        input_size=8, min_scale=0.3, cj_prob=0.0, gaussian_blur=0.0, random_gray_scale=0.5,
        normalize=NORMALIZE,
    )  # fmt: skip
    image = _image(16, 16, seed=1)
    torch.manual_seed(seed)
    shown = debug.apply_transform_without_normalize(image, view)
    torch.manual_seed(seed)
    full = view(image)
    assert isinstance(shown, Image.Image) and shown.size == (8, 8)
    pixels = torch.from_numpy(np.asarray(shown).copy()).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor(NORMALIZE["mean"]), torch.tensor(NORMALIZE["std"])
    # Up to 2.5 / 255 apart: resizing PIL and tensor images rounds differently.
    normalized = (pixels - mean[:, None, None]) / std[:, None, None]
    torch.testing.assert_close(normalized, full, atol=0.05, rtol=0)


@pytest.mark.parametrize("num_images", [1, 3])
def test_generate_grid_of_augmented_images(num_images: int) -> None:
    transform = SimCLRTransform(input_size=8)
    images = [_image(10, 12, seed=i) for i in range(num_images)]
    grid = debug.generate_grid_of_augmented_images(images, transform)
    assert len(grid) == len(transform.transforms) == 2
    for views in grid:
        assert len(views) == num_images
        assert all(isinstance(v, Image.Image) and v.size == (8, 8) for v in views)
    assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(*grid, strict=True))


def test_generate_grid_rejects_other_transforms() -> None:
    with pytest.raises(ValueError, match="MultiViewTransform"):
        debug.generate_grid_of_augmented_images([_image()], T_v1.Resize(4))  # type: ignore[arg-type]


def test_plot_without_matplotlib_raises_a_clear_import_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        debug.plot_augmented_images([_image()], SimCLRTransform(input_size=8))


class _Axes:
    def __init__(self) -> None:
        self.image: Any = None
        self.axis_off = False
        self.title = types.SimpleNamespace(set_size=lambda size: setattr(self, "title_size", size))
        self.title_text: str | None = None

    def imshow(self, image: Any) -> None:
        self.image = image

    def set_axis_off(self) -> None:
        self.axis_off = True

    def set(self, title: str) -> None:
        self.title_text = title


def _fake_pyplot() -> types.ModuleType:
    pyplot = types.ModuleType("matplotlib.pyplot")

    def subplots(nrows: int, ncols: int, figsize: tuple, squeeze: bool = True) -> tuple:
        axs = np.empty((nrows, ncols), dtype=object)
        for index in np.ndindex(nrows, ncols):
            axs[index] = _Axes()
        fig = types.SimpleNamespace(axs=axs, figsize=figsize, tight_layout=lambda: None)
        return fig, (axs if not squeeze else axs.squeeze())

    pyplot.subplots = subplots  # type: ignore[attr-defined]
    return pyplot


@pytest.mark.parametrize("num_images", [1, 2])
def test_plot_augmented_images_layout(num_images: int, monkeypatch: pytest.MonkeyPatch) -> None:
    pyplot = _fake_pyplot()
    matplotlib = types.ModuleType("matplotlib")
    matplotlib.pyplot = pyplot  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "matplotlib", matplotlib)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", pyplot)
    images = [_image(10, 10, seed=i) for i in range(num_images)]
    transform = MultiViewTransform([SimCLRViewTransform(input_size=6)] * 3)
    fig = debug.plot_augmented_images(images, transform)
    axs = fig.axs
    assert axs.shape == (num_images, 4) and fig.figsize == (6.0, num_images * 1.5)
    for row in range(num_images):
        assert axs[row, 0].image is images[row]  # the originals on the left
        for col in range(1, 4):
            assert isinstance(axs[row, col].image, Image.Image) and axs[row, col].image.size == (
                6,
                6,
            )
        assert all(ax.axis_off for ax in axs[row])
    assert axs[0, 0].title_text == "Original images" and axs[0, 1].title_text == "Augmented images"
    with pytest.raises(ValueError, match="at least one input image"):
        debug.plot_augmented_images([], transform)
