"""I-JEPA's single view (Assran et al., 2023, https://arxiv.org/abs/2301.08243)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastssl.transforms.mae_transform import MAETransform
from fastssl.transforms.multi_view_transform import ViewTransform
from fastssl.transforms.utils import IMAGENET_NORMALIZE
from fastssl.transforms.view_spec import ViewSpec


class IJEPATransform(ViewTransform):
    """I-JEPA's augmentation ("Self-Supervised Learning from Images with a Joint-Embedding
    Predictive Architecture", Assran, Duval, Misra, Bojanowski, Vincent, Rabbat, LeCun, Ballas,
    2023, https://arxiv.org/abs/2301.08243; https://github.com/facebookresearch/ijepa): a
    bicubic random resized crop and a horizontal flip, the same as MAE's; the context and
    target blocks are masked in the model.

    Same arguments and defaults as lightly 1.6's ``IJEPATransform``; like lightly, and unlike
    ``MAETransform``, the output is the view itself, not a list. ``normalize=None`` skips
    normalisation.

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: (C, H, W) float32 tensor with (H, W) = input_size.

    Args:
        input_size: Output size: int (square) or (height, width).
        min_scale: Minimum area fraction of the random resized crop.
        normalize: Dict with "mean" and "std", or None for no normalisation.

    >>> import torch
    >>> IJEPATransform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape
    torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        input_size: int | tuple[int, int] = 224,
        min_scale: float = 0.2,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        mae = MAETransform(input_size=input_size, min_scale=min_scale, normalize=normalize)
        super().__init__(mae.view_spec)

    @property
    def view_specs(self) -> list[ViewSpec]:
        """The ViewSpec of the single view, as a list (same shape as multi-view transforms)."""
        return [self.view_spec]
