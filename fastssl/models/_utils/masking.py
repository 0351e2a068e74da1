"""Random masks: token masks (MAE), causal prefixes (AIM) and block masks (DINOv2, iBOT).

Every function takes an optional ``generator`` so a seed fixes the masks without touching
the global random state. Public path: :mod:`fastssl.models.utils`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_DeviceLike = torch.device | str | None


def random_token_mask(
    size: tuple[int, int],
    mask_ratio: float = 0.6,
    mask_class_token: bool = False,
    device: _DeviceLike = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Draws, per sequence, a random set of tokens to mask (MAE, He et al. 2021).

    ``num_keep = int(L * (1 - mask_ratio))`` tokens are kept, where ``L`` is the sequence
    length without the class token when the class token cannot be masked; the class token
    (index 0) is then always kept and listed first. The draws (``torch.rand`` then argsort)
    are LightlySSL's, so the same seed gives the same masks.

    Args:
        size: ``(batch_size, sequence_length)``.
        mask_ratio: Fraction of tokens to mask, in [0, 1].
        mask_class_token: If False, token 0 (the class token) is never masked.
        device: Device of the returned indices.
        generator: Optional random generator on ``device``.

    Returns:
        ``(idx_keep, idx_mask)`` of shapes (batch_size, num_keep') and
        (batch_size, sequence_length - num_keep'), where num_keep' counts the class token.

    Raises:
        ValueError: If ``mask_ratio`` is outside [0, 1].

    Example:
        >>> idx_keep, idx_mask = random_token_mask((2, 17), mask_ratio=0.75)
        >>> idx_keep.shape, idx_mask.shape
        (torch.Size([2, 5]), torch.Size([2, 12]))
    """
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"random_token_mask: 'mask_ratio' must be in [0, 1], got {mask_ratio}.")
    batch_size, sequence_length = size
    protect_class_token = not mask_class_token and sequence_length > 0
    maskable = sequence_length - int(not mask_class_token)
    num_keep = int(maskable * (1 - mask_ratio))
    noise = torch.rand(batch_size, sequence_length, device=device, generator=generator)
    if protect_class_token:
        # A key below every uniform draw sorts the class token first, i.e. always kept.
        noise[:, 0] = -1.0
        num_keep = max(1, num_keep + 1)
    order = torch.argsort(noise, dim=1)
    return order[:, :num_keep], order[:, num_keep:]


def random_prefix_mask(
    size: tuple[int, int],
    max_prefix_length: int,
    device: _DeviceLike = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draws a random causal prefix per sequence (AIM, El-Nouby et al. 2024).

    Each sequence gets a prefix length drawn uniformly from [0, max_prefix_length)
    (upper bound excluded, as in LightlySSL 1.6 whatever its docstring says); tokens at
    positions >= the prefix length are masked.

    Args:
        size: ``(batch_size, sequence_length)``.
        max_prefix_length: Exclusive upper bound of the prefix length, >= 1.
        device: Device of the mask.
        generator: Optional random generator on ``device``.

    Returns:
        Boolean tensor of shape (batch_size, sequence_length), True where masked.

    Raises:
        ValueError: If ``max_prefix_length`` < 1.

    Example:
        >>> random_prefix_mask((2, 4), max_prefix_length=1).tolist()
        [[True, True, True, True], [True, True, True, True]]
    """
    if max_prefix_length < 1:
        raise ValueError(
            f"random_prefix_mask: 'max_prefix_length' must be >= 1, got {max_prefix_length}."
        )
    batch_size, sequence_length = size
    positions = torch.arange(sequence_length, device=device)
    prefix = torch.randint(
        0, max_prefix_length, (batch_size, 1), device=device, generator=generator
    )
    return positions.unsqueeze(0) >= prefix


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    """One float drawn uniformly from [low, high) with a CPU torch generator."""
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator | None, low: int, high: int) -> int:
    """One int drawn uniformly from [low, high] (both included) with a CPU generator."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def random_block_mask_image(
    size: tuple[int, int],
    num_masks: int,
    min_num_masks_per_block: int = 4,
    max_num_masks_per_block: int | None = None,
    min_block_aspect_ratio: float = 0.3,
    max_block_aspect_ratio: float | None = None,
    max_attempts_per_block: int = 10,
    device: _DeviceLike = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Masks rectangular blocks of one patch grid until ``num_masks`` patches are masked.

    The block sampling of DINOv2 (Oquab et al. 2023) and iBOT/BEiT: a block has a random
    area in [min_num_masks_per_block, remaining budget] and a log-uniform aspect ratio; a
    block that would overshoot the budget or mask nothing new is redrawn, up to
    ``max_attempts_per_block`` times, after which masking stops. The mask is built on the
    CPU (no per-block device synchronisation) and moved to ``device`` once. Random numbers
    come from torch, not Python's ``random``, so values differ from LightlySSL's while the
    distribution is the same.

    Args:
        size: ``(height, width)`` of the patch grid.
        num_masks: Number of patches to mask (an upper bound).
        min_num_masks_per_block: Smallest block area.
        max_num_masks_per_block: Largest block area; defaults to ``num_masks``.
        min_block_aspect_ratio: Smallest height / width ratio of a block.
        max_block_aspect_ratio: Largest ratio; defaults to ``1 / min_block_aspect_ratio``.
        max_attempts_per_block: Draws tried for one block before giving up.
        device: Device of the returned mask.
        generator: Optional CPU random generator.

    Returns:
        Boolean tensor of shape (height, width), True where masked.

    Raises:
        ValueError: If the maximum block area or aspect ratio is below its minimum.
    """
    if max_block_aspect_ratio is None:
        max_block_aspect_ratio = 1 / min_block_aspect_ratio
    if max_num_masks_per_block is None:
        max_num_masks_per_block = num_masks
    if max_num_masks_per_block < min_num_masks_per_block:
        raise ValueError(
            f"random_block_mask_image: 'max_num_masks_per_block' ({max_num_masks_per_block}) "
            f"must be >= 'min_num_masks_per_block' ({min_num_masks_per_block})."
        )
    if max_block_aspect_ratio < min_block_aspect_ratio:
        raise ValueError(
            f"random_block_mask_image: 'max_block_aspect_ratio' ({max_block_aspect_ratio}) "
            f"must be >= 'min_block_aspect_ratio' ({min_block_aspect_ratio})."
        )
    log_aspect = (math.log(min_block_aspect_ratio), math.log(max_block_aspect_ratio))
    height, width = size
    mask = torch.zeros(height, width, dtype=torch.bool)
    masked = 0
    while masked < num_masks:
        budget = min(num_masks - masked, max_num_masks_per_block)
        added = 0
        for _ in range(max_attempts_per_block):
            area = _uniform(generator, min_num_masks_per_block, budget)
            aspect = math.exp(_uniform(generator, *log_aspect))
            h = round(math.sqrt(area * aspect))
            w = round(math.sqrt(area / aspect))
            if h < height and w < width:
                top = _randint(generator, 0, height - h)
                left = _randint(generator, 0, width - w)
                block = mask[top : top + h, left : left + w]
                new = h * w - int(block.sum())
                if 0 < new <= budget:
                    block.fill_(True)
                    added += new
            if added > 0:
                break
        if added == 0:
            break
        masked += added
    return mask.to(device)


def random_block_mask(
    size: tuple[int, int, int],
    batch_mask_ratio: float = 0.5,
    min_image_mask_ratio: float = 0.1,
    max_image_mask_ratio: float = 0.5,
    min_num_masks_per_block: int = 4,
    max_num_masks_per_block: int | None = None,
    min_block_aspect_ratio: float = 0.3,
    max_block_aspect_ratio: float | None = None,
    max_attempts_per_block: int = 10,
    device: _DeviceLike = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Block masks for a batch of patch grids, as in DINOv2's collate (Oquab et al. 2023).

    ``int(B * batch_mask_ratio)`` images are masked; their mask ratios are spread over
    [min_image_mask_ratio, max_image_mask_ratio] (image k draws its ratio in the k-th of
    equal sub-intervals), the other images are left unmasked, and the batch is shuffled.

    Args:
        size: ``(batch_size, height, width)``.
        batch_mask_ratio: Fraction of images that get a mask.
        min_image_mask_ratio: Lowest fraction of an image's patches to mask.
        max_image_mask_ratio: Highest fraction of an image's patches to mask.
        min_num_masks_per_block: See :func:`random_block_mask_image`.
        max_num_masks_per_block: See :func:`random_block_mask_image`.
        min_block_aspect_ratio: See :func:`random_block_mask_image`.
        max_block_aspect_ratio: See :func:`random_block_mask_image`.
        max_attempts_per_block: See :func:`random_block_mask_image`.
        device: Device of the returned mask.
        generator: Optional CPU random generator.

    Returns:
        Boolean tensor of shape (batch_size, height, width), True where masked.

    Raises:
        ValueError: If ``max_image_mask_ratio`` < ``min_image_mask_ratio``.

    Example:
        >>> random_block_mask((4, 14, 14)).shape
        torch.Size([4, 14, 14])
    """
    if max_image_mask_ratio < min_image_mask_ratio:
        raise ValueError(
            f"random_block_mask: 'max_image_mask_ratio' ({max_image_mask_ratio}) must be >= "
            f"'min_image_mask_ratio' ({min_image_mask_ratio})."
        )
    batch_size, height, width = size
    num_masked_images = int(batch_size * batch_mask_ratio)
    bounds = torch.linspace(min_image_mask_ratio, max_image_mask_ratio, num_masked_images + 1)
    masks = []
    for low, high in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        masks.append(
            random_block_mask_image(
                size=(height, width),
                num_masks=int(height * width * _uniform(generator, low, high)),
                min_num_masks_per_block=min_num_masks_per_block,
                max_num_masks_per_block=max_num_masks_per_block,
                min_block_aspect_ratio=min_block_aspect_ratio,
                max_block_aspect_ratio=max_block_aspect_ratio,
                max_attempts_per_block=max_attempts_per_block,
                generator=generator,
            )
        )
    masks += [torch.zeros(height, width, dtype=torch.bool)] * (batch_size - num_masked_images)
    order = torch.randperm(batch_size, generator=generator).tolist()
    if not masks:
        return torch.zeros(0, height, width, dtype=torch.bool, device=device)
    return torch.stack([masks[i] for i in order]).to(device)
