"""Collate function that samples the context and target blocks of I-JEPA (LightlySSL's
``lightly.data.ijepa_collate``).

Example:
    >>> import torch
    >>> collator = IJEPAMaskCollator(input_size=64, patch_size=16)  # a 4 x 4 patch grid
    >>> images, masks_enc, masks_pred = collator([(torch.zeros(3, 64, 64), 0)] * 2)
    >>> images[0].shape, len(masks_enc), len(masks_pred), masks_enc[0].shape[0]
    (torch.Size([2, 3, 64, 64]), 1, 2, 2)
"""

from __future__ import annotations

import math
from multiprocessing import Value
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import default_collate

# After this many rejected positions of a context block, one more target block stops
# constraining it (see IJEPAMaskCollator._sample_block_mask).
_ATTEMPTS_PER_RELAXATION = 20


class IJEPAMaskCollator:
    """Collates images and samples I-JEPA's masks of patch indices.

    I-JEPA (Assran et al., 2023, "Self-Supervised Learning from Images with a
    Joint-Embedding Predictive Architecture", https://arxiv.org/abs/2301.08243) predicts
    the representations of ``npred`` target blocks of patches from one context block. Per
    batch, one target block size (scale in ``pred_mask_scale``, aspect ratio in
    ``aspect_ratio``) and one square context block size (scale in ``enc_mask_scale``) are
    drawn from a generator seeded with the batch counter; every image then gets its own
    block positions from torch's global RNG. Unless ``allow_overlap``, the context block
    leaves out the patches of the image's target blocks. All masks of a kind are cut to
    the shortest one in the batch so that they stack. As in the authors' code, a block
    never touches the last patch row or column, and the scale and aspect ratio of a size
    come from one uniform draw.

    Experimental, as in LightlySSL.

    Args:
        input_size: Image size (H, W) in pixels, or one int for square images.
        patch_size: Patch side in pixels; the grid is (H // patch_size, W // patch_size).
        enc_mask_scale: Range of the context block's area, as a fraction of the grid.
        pred_mask_scale: Range of a target block's area, as a fraction of the grid.
        aspect_ratio: Range of a target block's height / width.
        nenc: Number of context blocks per image.
        npred: Number of target blocks per image.
        min_keep: A block must keep more than this many patches.
        allow_overlap: Let the context block overlap the target blocks.

    Call:
        ``collator(batch)`` with ``batch`` a list of B samples returns
        ``(default_collate(batch), masks_enc, masks_pred)``: ``masks_enc`` is a list of
        ``nenc`` long tensors of shape (B, K_enc), ``masks_pred`` a list of ``npred`` long
        tensors of shape (B, K_pred), holding flattened patch indices (row-major, ascending).
    """

    def __init__(
        self,
        input_size: int | tuple[int, int] = (224, 224),
        patch_size: int = 16,
        enc_mask_scale: tuple[float, float] = (0.2, 0.8),
        pred_mask_scale: tuple[float, float] = (0.2, 0.8),
        aspect_ratio: tuple[float, float] = (0.3, 3.0),
        nenc: int = 1,
        npred: int = 2,
        min_keep: int = 4,
        allow_overlap: bool = False,
    ) -> None:
        if not isinstance(input_size, tuple):
            input_size = (input_size, input_size)
        self.patch_size = patch_size
        self.height = input_size[0] // patch_size
        self.width = input_size[1] // patch_size
        if self.height < 2 or self.width < 2:
            raise ValueError(
                f"input_size={input_size} with patch_size={patch_size} gives a "
                f"{self.height} x {self.width} patch grid; blocks need at least 2 x 2"
            )
        self.enc_mask_scale = enc_mask_scale
        self.pred_mask_scale = pred_mask_scale
        self.aspect_ratio = aspect_ratio
        self.nenc = nenc
        self.npred = npred
        self.min_keep = min_keep
        self.allow_overlap = allow_overlap
        # Batch counter in shared memory: DataLoader workers (forked) share one sequence
        # of seeds, so every batch gets different block sizes.
        self._itr_counter: Synchronized[int] = Value("i", -1)

    def step(self) -> int:
        """Advances the shared batch counter and returns its new value (0 first)."""
        with self._itr_counter.get_lock():
            self._itr_counter.value += 1
            return int(self._itr_counter.value)

    def _sample_block_size(
        self,
        generator: torch.Generator,
        scale: tuple[float, float],
        aspect_ratio_scale: tuple[float, float],
    ) -> tuple[int, int]:
        """Block (height, width) in patches, both below the grid's."""
        u = float(torch.rand(1, generator=generator))
        area = int(self.height * self.width * (scale[0] + u * (scale[1] - scale[0])))
        ratio = aspect_ratio_scale[0] + u * (aspect_ratio_scale[1] - aspect_ratio_scale[0])
        h = round(math.sqrt(area * ratio))
        w = round(math.sqrt(area / ratio))
        return min(h, self.height - 1), min(w, self.width - 1)

    def _sample_block_mask(
        self,
        b_size: tuple[int, int],
        acceptable_regions: list[Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Places a block of size ``b_size`` at a random position.

        The block is cut to the ``acceptable_regions`` (boolean (H, W) grids); positions
        are redrawn until more than ``min_keep`` patches remain. Every
        ``_ATTEMPTS_PER_RELAXATION`` rejections the last remaining region is dropped, so
        the loop ends even when the regions leave too little room.

        Returns:
            ``(indices, complement)``: the kept patch indices (1-D, ascending) and the
            boolean (H, W) grid that is False on the whole block.
        """
        h, w = b_size
        regions = acceptable_regions or []
        attempts = 0
        while True:
            top = int(torch.randint(0, self.height - h, (1,)))
            left = int(torch.randint(0, self.width - w, (1,)))
            block = torch.zeros(self.height, self.width, dtype=torch.bool)
            block[top : top + h, left : left + w] = True
            kept = block.clone()
            for region in regions[: max(len(regions) - attempts // _ATTEMPTS_PER_RELAXATION, 0)]:
                kept &= region
            indices = kept.flatten().nonzero().flatten()
            if len(indices) > self.min_keep:
                return indices, ~block
            attempts += 1

    def _check_block_size(self, size: tuple[int, int], name: str) -> None:
        # A block of min_keep patches or fewer can never be accepted: fail instead of
        # redrawing positions forever.
        if size[0] * size[1] <= self.min_keep:
            raise ValueError(
                f"the {name} block drawn has {size[0]} x {size[1]} patches (of a "
                f"{self.height} x {self.width} grid); blocks need more than min_keep="
                f"{self.min_keep} patches: raise {name}_mask_scale or the input size, or "
                "lower min_keep"
            )

    def __call__(self, batch: list[Any]) -> tuple[Any, list[Tensor], list[Tensor]]:
        """Collates ``batch`` and samples the context and target masks (see the class)."""
        collated_batch = default_collate(batch)
        generator = torch.Generator().manual_seed(self.step())
        pred_size = self._sample_block_size(generator, self.pred_mask_scale, self.aspect_ratio)
        enc_size = self._sample_block_size(generator, self.enc_mask_scale, (1.0, 1.0))
        self._check_block_size(pred_size, "pred")
        self._check_block_size(enc_size, "enc")

        masks_pred: list[list[Tensor]] = []
        masks_enc: list[list[Tensor]] = []
        for _ in batch:
            targets = [self._sample_block_mask(pred_size) for _ in range(self.npred)]
            masks_pred.append([indices for indices, _ in targets])
            regions = None if self.allow_overlap else [complement for _, complement in targets]
            masks_enc.append(
                [self._sample_block_mask(enc_size, regions)[0] for _ in range(self.nenc)]
            )
        return collated_batch, _stack_cut(masks_enc), _stack_cut(masks_pred)


def _stack_cut(masks: list[list[Tensor]]) -> list[Tensor]:
    """``masks[b][j]`` (1-D) -> j-th tensor of shape (B, K), K the shortest mask's length."""
    keep = min((len(mask) for sample in masks for mask in sample), default=0)
    return [torch.stack([mask[:keep] for mask in column]) for column in zip(*masks, strict=True)]
