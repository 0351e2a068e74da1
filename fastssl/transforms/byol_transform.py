"""BYOL views (Grill et al., 2020, https://arxiv.org/abs/2006.07733): two asymmetric views,
the first always blurred, the second rarely blurred and sometimes solarized."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastssl.transforms.multi_view_transform import MultiViewTransform, ViewTransform
from fastssl.transforms.utils import IMAGENET_NORMALIZE, lightly_arguments
from fastssl.transforms.view_spec import ViewSpec


class BYOLView1Transform(ViewTransform):
    """The first BYOL view (BYOL, https://arxiv.org/abs/2006.07733): blur probability
    1.0, solarization probability 0.0.

    Same arguments and defaults as lightly 1.6's ``BYOLView1Transform``; ``solarization_prob``
    is the probability of solarization, the others are described in
    ``fastssl.transforms.simclr_transform.SimCLRViewTransform``.

    Input: PIL image or (C, H, W) uint8 tensor. Output: (C, input_size, input_size) float32.

    >>> import torch
    >>> BYOLView1Transform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape
    torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        input_size: int = 224,
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.4,
        cj_contrast: float = 0.4,
        cj_sat: float = 0.2,
        cj_hue: float = 0.1,
        min_scale: float = 0.08,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 1.0,
        solarization_prob: float = 0.0,
        sigmas: tuple[float, float] = (0.1, 2),
        vf_prob: float = 0.0,
        hf_prob: float = 0.5,
        rr_prob: float = 0.0,
        rr_degrees: float | tuple[float, float] | None = None,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        super().__init__(ViewSpec.from_lightly_args(**lightly_arguments(locals())))


class BYOLView2Transform(ViewTransform):
    """The second BYOL view (BYOL, https://arxiv.org/abs/2006.07733): blur probability
    0.1, solarization probability 0.2.

    Same arguments and defaults as lightly 1.6's ``BYOLView2Transform``; ``solarization_prob``
    is the probability of solarization, the others are described in
    ``fastssl.transforms.simclr_transform.SimCLRViewTransform``.

    Input: PIL image or (C, H, W) uint8 tensor. Output: (C, input_size, input_size) float32.

    >>> import torch
    >>> BYOLView2Transform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape
    torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        input_size: int = 224,
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.4,
        cj_contrast: float = 0.4,
        cj_sat: float = 0.2,
        cj_hue: float = 0.1,
        min_scale: float = 0.08,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 0.1,
        solarization_prob: float = 0.2,
        sigmas: tuple[float, float] = (0.1, 2),
        vf_prob: float = 0.0,
        hf_prob: float = 0.5,
        rr_prob: float = 0.0,
        rr_degrees: float | tuple[float, float] | None = None,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        super().__init__(ViewSpec.from_lightly_args(**lightly_arguments(locals())))


class BYOLTransform(MultiViewTransform):
    """The two asymmetric BYOL views of each image (BYOL, https://arxiv.org/abs/2006.07733).

    Same arguments as lightly 1.6's ``BYOLTransform``.

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: [view_1_transform(image), view_2_transform(image)].

    Args:
        view_1_transform: Transform of the first view; ``BYOLView1Transform()`` when None.
        view_2_transform: Transform of the second view; ``BYOLView2Transform()`` when None.

    >>> import torch
    >>> view_1, view_2 = BYOLView1Transform(input_size=32), BYOLView2Transform(input_size=32)
    >>> transform = BYOLTransform(view_1, view_2)
    >>> [v.shape[-1] for v in transform(torch.zeros(3, 40, 40, dtype=torch.uint8))]
    [32, 32]
    """

    def __init__(
        self,
        view_1_transform: BYOLView1Transform | None = None,
        view_2_transform: BYOLView2Transform | None = None,
    ) -> None:
        view_1_transform = view_1_transform or BYOLView1Transform()
        view_2_transform = view_2_transform or BYOLView2Transform()
        super().__init__(transforms=[view_1_transform, view_2_transform])
