"""FastSiam views (Pototzky, Sultan & Schmidt-Thieme, 2022,
https://link.springer.com/chapter/10.1007/978-3-031-16788-1_4): ``num_views`` SimSiam views."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastssl.transforms.multi_view_transform import MultiViewTransform
from fastssl.transforms.simsiam_transform import SimSiamViewTransform
from fastssl.transforms.utils import IMAGENET_NORMALIZE, check_view_count, lightly_arguments


class FastSiamTransform(MultiViewTransform):
    """``num_views`` SimSiam-augmented views per image for FastSiam.

    Paper: "FastSiam: Resource-Efficient Self-supervised Learning on a Single GPU",
    Pototzky, Sultan & Schmidt-Thieme, GCPR 2022,
    https://link.springer.com/chapter/10.1007/978-3-031-16788-1_4. FastSiam predicts the mean
    of K target views from one view, so ``num_views = K + 1``. Every view uses SimSiam's
    augmentations (``SimSiamViewTransform``: random resized crop, flips, optional rotation,
    color jitter, grayscale, Gaussian blur, ImageNet normalisation).

    Same arguments and defaults as lightly 1.6's ``FastSiamTransform``; ``view_specs`` lists
    the ``num_views`` (identical) ViewSpecs. The other arguments are described in
    ``fastssl.transforms.simclr_transform.SimCLRViewTransform``.

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: list of num_views tensors of shape (C, input_size, input_size), float32.

    Args:
        num_views: Number of views (K target views + 1), >= 0.

    Raises:
        ValueError: If ``num_views`` is not an int >= 0.

    >>> import torch
    >>> views = FastSiamTransform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8))
    >>> len(views), tuple(views[0].shape)
    (4, (3, 32, 32))
    """

    def __init__(
        self,
        num_views: int = 4,
        input_size: int = 224,
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.4,
        cj_contrast: float = 0.4,
        cj_sat: float = 0.4,
        cj_hue: float = 0.1,
        min_scale: float = 0.2,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 0.5,
        sigmas: tuple[float, float] = (0.1, 2),
        vf_prob: float = 0.0,
        hf_prob: float = 0.5,
        rr_prob: float = 0.0,
        rr_degrees: float | tuple[float, float] | None = None,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        check_view_count("num_views", num_views)
        view = SimSiamViewTransform(**lightly_arguments(locals(), exclude=("num_views",)))
        super().__init__(transforms=[view] * num_views)
