"""CAPI's single view (Darcet et al., 2025, https://arxiv.org/abs/2502.08769)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastssl.transforms.mae_transform import MAETransform
from fastssl.transforms.utils import IMAGENET_NORMALIZE


class CAPITransform(MAETransform):
    """CAPI's augmentation (CAPI: Cluster and Predict Latent Patches for Improved Masked Image
    Modeling, Darcet, Baldassarre, Oquab, Mairal, Bojanowski, 2025,
    https://arxiv.org/abs/2502.08769): a bicubic random resized crop covering at least
    ``min_scale`` of the image and a horizontal flip; masking happens in the model.

    That is MAE's augmentation with a larger minimum crop, so the class is a ``MAETransform``
    with lightly 1.6's ``CAPITransform`` arguments and defaults. The output is a list holding
    one view, as in lightly.

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: list of 1 tensor (C, H, W) float32 with (H, W) = input_size.

    Args:
        input_size: Output size: int (square) or (height, width).
        min_scale: Minimum area fraction of the random resized crop.
        normalize: Dict with "mean" and "std", or None for no normalisation.

    >>> import torch
    >>> views = CAPITransform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8))
    >>> len(views), tuple(views[0].shape)
    (1, (3, 32, 32))
    """

    def __init__(
        self,
        input_size: int | tuple[int, int] = 224,
        min_scale: float = 0.6,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        super().__init__(input_size=input_size, min_scale=min_scale, normalize=normalize)
