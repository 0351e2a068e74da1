"""PIRL views (Misra & van der Maaten, 2019, https://arxiv.org/abs/1912.01991): the image
and a jigsaw puzzle of it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastssl.transforms.jigsaw import Jigsaw
from fastssl.transforms.multi_view_transform import MultiViewTransform, ViewTransform
from fastssl.transforms.utils import IMAGENET_NORMALIZE
from fastssl.transforms.view_spec import ViewSpec


class PIRLTransform(MultiViewTransform):
    """The two PIRL views: a random resized crop, and augmented jigsaw tiles.

    Paper: "Self-Supervised Learning of Pretext-Invariant Representations", Misra &
    van der Maaten, CVPR 2020, https://arxiv.org/abs/1912.01991.

    View 0 is a random resized crop (no other augmentation), normalised. View 1 is a
    ``Jigsaw`` of ``n_grid`` x ``n_grid`` tiles of side ``max(input_size) // n_grid``, each
    tile independently flipped, color-jittered, grayscaled and normalised (a ViewSpec without
    crop, ``jigsaw.transform.view_spec``), in random order; the model embeds the tiles and
    combines them. As in lightly, the tiles are cut from the top-left
    ``max(input_size)`` square of the image as given (not from view 0's crop), so the images
    should be about ``input_size`` large. Same arguments and defaults as lightly 1.6's
    ``PIRLTransform``.

    Input: PIL image or (C, H, W) uint8 tensor, at least max(input_size) // n_grid * n_grid
    pixels on each side.
    Output: [tensor (C, H, W) with (H, W) = input_size,
    tensor (n_grid ** 2, C, t, t) with t = max(input_size) // n_grid], float32.

    Args:
        input_size: Size of view 0: int (square) or (height, width).
        cj_prob: Probability that color jitter is applied to a tile.
        cj_strength: Multiplies cj_bright, cj_contrast, cj_sat and cj_hue.
        cj_bright: How much to jitter brightness.
        cj_contrast: How much to jitter contrast.
        cj_sat: How much to jitter saturation.
        cj_hue: How much to jitter hue.
        min_scale: Minimum area fraction of view 0's random resized crop.
        random_gray_scale: Probability of converting a tile to grayscale.
        hf_prob: Probability of flipping a tile horizontally.
        n_grid: Tiles per side of the jigsaw.
        normalize: Dict with "mean" and "std", or None for no normalisation.

    >>> import torch
    >>> view, tiles = PIRLTransform(input_size=24)(torch.zeros(3, 32, 32, dtype=torch.uint8))
    >>> tuple(view.shape), tuple(tiles.shape)
    ((3, 24, 24), (9, 3, 8, 8))
    """

    def __init__(
        self,
        input_size: int | tuple[int, int] = 64,
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.4,
        cj_contrast: float = 0.4,
        cj_sat: float = 0.4,
        cj_hue: float = 0.4,
        min_scale: float = 0.08,
        random_gray_scale: float = 0.2,
        hf_prob: float = 0.5,
        n_grid: int = 3,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        if isinstance(input_size, list):
            input_size = (input_size[0], input_size[1])
        crop = ViewSpec.from_lightly_args(
            input_size=input_size,
            min_scale=min_scale,
            hf_prob=0.0,
            cj_prob=0.0,
            random_gray_scale=0.0,
            gaussian_blur=0.0,
            normalize=normalize,
        )
        tile = ViewSpec.from_lightly_args(
            input_size=None,
            hf_prob=hf_prob,
            cj_prob=cj_prob,
            cj_strength=cj_strength,
            cj_bright=cj_bright,
            cj_contrast=cj_contrast,
            cj_sat=cj_sat,
            cj_hue=cj_hue,
            random_gray_scale=random_gray_scale,
            gaussian_blur=0.0,
            normalize=normalize,
        )
        jigsaw_size = max(input_size) if isinstance(input_size, tuple) else input_size
        jigsaw = Jigsaw(
            n_grid=n_grid,
            img_size=jigsaw_size,
            crop_size=jigsaw_size // n_grid,
            transform=ViewTransform(tile),
        )
        super().__init__([ViewTransform(crop), jigsaw])
