"""Debugging helpers: a collapse measure and views of what the augmentations do
(LightlySSL's ``lightly.utils.debug``).

Plotting needs matplotlib, which fastssl does not depend on: it is imported when
:func:`plot_augmented_images` is called, and a clear ``ImportError`` says how to install it.

Example:
    >>> import torch
    >>> float(std_of_l2_normalized(torch.ones(8, 4)))  # collapsed: all outputs equal
    0.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torchvision.transforms as T_v1
from PIL.Image import Image
from torchvision.transforms import v2 as T_v2

from fastssl.transforms.multi_view_transform import MultiViewTransform
from fastssl.transforms.torchvision_v2_compatibility import ToTensor
from fastssl.transforms.view_spec import _as_plain_tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Steps that turn a PIL image into a (normalised) tensor: skipped so that the result stays
# a PIL image that can be shown. fastssl's ViewSpec pipelines start with ToImage and end
# with ToDtype, Normalize and a conversion to a plain tensor; lightly's with ToTensor and
# Normalize.
_TO_TENSOR_STEPS: tuple[type, ...] = (
    ToTensor,
    T_v1.ToTensor,
    T_v1.PILToTensor,
    T_v1.ConvertImageDtype,
    T_v1.Normalize,
    T_v2.ToImage,
    T_v2.ToTensor,
    T_v2.PILToTensor,
    T_v2.ToDtype,
    T_v2.ConvertImageDtype,
    T_v2.Normalize,
    T_v2.ToPureTensor,
)
_COMPOSE = (T_v1.Compose, T_v2.Compose)


@torch.no_grad()
def std_of_l2_normalized(z: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the standard deviation of the L2-normalised outputs.

    The collapse measure of SimSiam (Chen & He, 2020, "Exploring Simple Siamese
    Representation Learning", https://arxiv.org/abs/2011.10566): 0 when all outputs are
    the same vector (collapse), about ``1 / sqrt(D)`` when they are spread like a
    zero-mean isotropic Gaussian.

    Args:
        z: Outputs of shape (B, D).

    Returns:
        Scalar tensor: ``normalize(z, dim=1).std(dim=0).mean()`` (unbiased std).

    Raises:
        ValueError: If ``z`` is not two-dimensional.
    """
    if z.ndim != 2:
        raise ValueError(f"Input tensor must have two dimensions but has {z.ndim}!")
    return torch.nn.functional.normalize(z, dim=1).std(dim=0).mean()


def apply_transform_without_normalize(image: Image, transform: Any) -> Image:
    """Applies ``transform`` to a PIL image but skips its conversion to a tensor and its
    normalisation, so that the result can be looked at.

    ``Compose`` pipelines (torchvision v1 or v2) and view transforms wrapping one in a
    ``transform`` attribute (e.g. ``SimCLRViewTransform``) are walked step by step.

    Args:
        image: The input PIL image.
        transform: A transform or pipeline; its ToTensor / ToImage / ToDtype / Normalize
            steps are skipped.

    Returns:
        The transformed PIL image.
    """
    # The conversions are checked first: fastssl's (and lightly's) ToTensor wraps a Compose
    # in its `transform` attribute, which the branch below would otherwise apply.
    if isinstance(transform, _TO_TENSOR_STEPS) or transform is _as_plain_tensor:
        return image
    if isinstance(transform, _COMPOSE):
        for step in transform.transforms:
            image = apply_transform_without_normalize(image, step)
        return image
    # Checked after Compose: v2.Compose has a bound method named `transform`.
    inner = getattr(transform, "transform", None)
    if isinstance(inner, _COMPOSE):
        return apply_transform_without_normalize(image, inner)
    result: Image = transform(image)
    return result


def generate_grid_of_augmented_images(
    input_images: list[Image],
    transform: MultiViewTransform,
) -> list[list[Image]]:
    """Augments every image with every view of ``transform``, without tensor conversion.

    Args:
        input_images: PIL images to augment.
        transform: A :class:`~fastssl.transforms.MultiViewTransform` (e.g. SimCLRTransform).

    Returns:
        ``grid[v][i]``: view ``v`` of image ``i``, a PIL image. A "column" (fixed ``i``)
        holds the views of one image.

    Raises:
        ValueError: If ``transform`` is not a MultiViewTransform.
    """
    if not isinstance(transform, MultiViewTransform):
        raise ValueError(f"Transform must be of type MultiViewTransform but is {type(transform)}.")
    return [
        [apply_transform_without_normalize(image, view) for image in input_images]
        for view in transform.transforms
    ]


def plot_augmented_images(
    input_images: list[Image],
    transform: MultiViewTransform,
) -> Figure:
    """Plots each image (left column) next to all its augmented views.

    Tensor conversion and normalisation are skipped, as in
    :func:`generate_grid_of_augmented_images`.

    Args:
        input_images: PIL images to augment; one row each.
        transform: A :class:`~fastssl.transforms.MultiViewTransform`.

    Returns:
        A matplotlib figure with ``len(input_images)`` rows and ``1 + number of views``
        columns.

    Raises:
        ImportError: If matplotlib is not installed.
        ValueError: If ``input_images`` is empty or ``transform`` is not a
            MultiViewTransform.
    """
    plt = _import_pyplot()
    if len(input_images) == 0:
        raise ValueError("There must be at least one input image.")
    columns = [list(input_images), *generate_grid_of_augmented_images(input_images, transform)]
    nrows, ncols = len(input_images), len(columns)
    fig, axs = plt.subplots(nrows, ncols, figsize=(ncols * 1.5, nrows * 1.5), squeeze=False)
    for row in range(nrows):
        for col in range(ncols):
            axs[row][col].imshow(columns[col][row])
            axs[row][col].set_axis_off()
    for col, title in ((0, "Original images"), (1, "Augmented images")):
        if col < ncols:
            axs[0][col].set(title=title)
            axs[0][col].title.set_size(8)
    fig.tight_layout()
    return fig


def _import_pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "plot_augmented_images needs matplotlib, which is not installed: pip install matplotlib"
        ) from error
    return plt
