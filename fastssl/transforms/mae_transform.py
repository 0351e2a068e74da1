"""MAE's single view (He et al., 2021, https://arxiv.org/abs/2111.06377)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from PIL.Image import Image
from torch import Tensor

from fastssl.transforms.utils import IMAGENET_NORMALIZE
from fastssl.transforms.view_spec import ViewSpec


class MAETransform:
    """MAE's augmentation (MAE, https://arxiv.org/abs/2111.06377): a bicubic random resized
    crop and a horizontal flip; masking happens in the model.

    Same arguments and defaults as lightly 1.6's ``MAETransform``; like lightly the output is a
    list holding one view, so the same collate and training step serve every method.

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: list of 1 tensor (C, H, W) float32 with (H, W) = input_size.

    Args:
        input_size: Output size: int (square) or (height, width).
        min_scale: Minimum area fraction of the random resized crop.
        normalize: Dict with "mean" and "std", or None for no normalisation.

    >>> import torch
    >>> views = MAETransform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8))
    >>> len(views), tuple(views[0].shape)
    (1, (3, 32, 32))
    """

    def __init__(
        self,
        input_size: int | tuple[int, int] = 224,
        min_scale: float = 0.2,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        self.view_spec = ViewSpec.from_lightly_args(
            input_size=tuple(input_size) if isinstance(input_size, list) else input_size,
            min_scale=min_scale,
            interpolation="bicubic",
            hf_prob=0.5,
            cj_prob=0.0,
            random_gray_scale=0.0,
            gaussian_blur=0.0,
            normalize=normalize,
        )
        self.transform = self.view_spec.build_torchvision()

    @property
    def view_specs(self) -> list[ViewSpec]:
        """The ViewSpec of the single view, as a list (same shape as multi-view transforms)."""
        return [self.view_spec]

    def __call__(self, image: Tensor | Image) -> list[Tensor]:
        """Returns ``[view]``."""
        return [self.transform(image)]
