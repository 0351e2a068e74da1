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


def _square_patch_grid(sequence_length: int, num_prefix_tokens: int, caller: str) -> int:
    """Side of the square patch grid behind ``sequence_length`` tokens (prefix excluded)."""
    num_patches = sequence_length - num_prefix_tokens
    if num_patches <= 0:
        raise ValueError(
            f"{caller}: sequence_length ({sequence_length}) must be greater than "
            f"num_prefix_tokens ({num_prefix_tokens})."
        )
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(
            f"{caller}: the number of patches ({num_patches}) must be a perfect square, got "
            f"sequence_length={sequence_length} and num_prefix_tokens={num_prefix_tokens}."
        )
    return side


def _with_prefix(
    patch_order: Tensor, num_keep: int, num_prefix_tokens: int
) -> tuple[Tensor, Tensor]:
    """Splits patch indices (B, P) after ``num_keep`` into token-index ``(idx_keep, idx_mask)``.

    Patch ``p`` is token ``p + num_prefix_tokens``; the prefix tokens are always kept and
    listed first.
    """
    tokens = patch_order + num_prefix_tokens
    prefix = torch.arange(num_prefix_tokens, device=tokens.device, dtype=tokens.dtype)
    prefix = prefix.expand(tokens.shape[0], -1)
    return torch.cat([prefix, tokens[:, :num_keep]], dim=1), tokens[:, num_keep:]


def random_grid_token_mask(
    size: tuple[int, int],
    mask_ratio: float = 0.75,
    grid_size: int = 4,
    num_prefix_tokens: int = 1,
    device: _DeviceLike = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Masks whole ``grid_size`` x ``grid_size`` cells of patches (Pixio, Yang et al. 2025).

    The patch grid is tiled by square cells; per sequence, ``int(num_cells * (1 -
    mask_ratio))`` random cells are kept and the others masked, every patch of a cell with
    it. Masking coarser than a patch stops the pixel decoder from copying a masked patch's
    visible neighbours ("In Pursuit of Pixel Supervision for Visual Pre-training",
    https://arxiv.org/abs/2512.15715). Cells are ordered by ``torch.rand`` noise (one draw
    per cell), as in LightlySSL, so the same seed gives the same masks.

    Args:
        size: ``(batch_size, sequence_length)``; ``sequence_length - num_prefix_tokens``
            patches must form a square grid whose side is a multiple of ``grid_size``.
        mask_ratio: Fraction of cells to mask, in [0, 1].
        grid_size: Side of a cell, in patches.
        num_prefix_tokens: Class / register tokens before the patches; never masked.
        device: Device of the returned indices.
        generator: Optional random generator on ``device``.

    Returns:
        ``(idx_keep, idx_mask)``, int64 token indices of shapes
        (batch_size, num_prefix_tokens + num_keep) and (batch_size, num_patches - num_keep)
        with ``num_keep = int(num_cells * (1 - mask_ratio)) * grid_size**2``. ``idx_keep``
        starts with the prefix tokens; within a cell, patches are listed row by row.

    Raises:
        ValueError: If the patches do not form a square grid divisible by ``grid_size``, or
            ``mask_ratio`` is outside [0, 1].

    Example:
        >>> idx_keep, idx_mask = random_grid_token_mask((2, 1 + 64), mask_ratio=0.75)
        >>> idx_keep.shape, idx_mask.shape
        (torch.Size([2, 17]), torch.Size([2, 48]))
    """
    caller = "random_grid_token_mask"
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"{caller}: 'mask_ratio' must be in [0, 1], got {mask_ratio}.")
    batch_size, sequence_length = size
    side = _square_patch_grid(sequence_length, num_prefix_tokens, caller)
    if grid_size < 1 or side % grid_size:
        raise ValueError(
            f"{caller}: the patch grid side ({side}) must be divisible by 'grid_size' "
            f"({grid_size})."
        )
    cells_per_side = side // grid_size
    num_cells = cells_per_side * cells_per_side
    num_keep_cells = int(num_cells * (1 - mask_ratio))

    noise = torch.rand(batch_size, num_cells, device=device, generator=generator)
    cells = torch.argsort(noise, dim=1)  # (B, num_cells): kept cells first
    # Patch index of a cell's top-left corner, plus the offsets of the patches it covers.
    corner = (cells // cells_per_side) * grid_size * side + (cells % cells_per_side) * grid_size
    steps = torch.arange(grid_size, device=corner.device)
    offsets = (steps[:, None] * side + steps[None, :]).flatten()  # (grid_size**2,)
    patches = (corner[..., None] + offsets).flatten(1)  # (B, num_patches)
    return _with_prefix(patches, num_keep_cells * grid_size * grid_size, num_prefix_tokens)


def random_inverse_block_mask(
    size: tuple[int, int],
    mask_ratio: float = 0.65,
    num_prefix_tokens: int = 1,
    min_aspect: float = 0.5,
    max_aspect: float | None = None,
    roll: bool = True,
    device: _DeviceLike = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Keeps one random rectangle of patches visible and masks the rest (CAPI, Darcet et al.).

    The inverse of block masking, from "Cluster and Predict Latent Patches for Improved
    Masked Image Modeling" (Darcet et al. 2025, https://arxiv.org/abs/2502.08769): per
    image exactly ``num_visible = num_patches - int(num_patches * mask_ratio)`` patches stay
    visible. They are the first ``num_visible`` patches, row by row, of a block whose aspect
    ratio is log-uniform in [min_aspect, max_aspect] (clamped so the block fits the grid) and
    whose area is just above ``num_visible``. With ``roll`` the visible pattern is then
    shifted cyclically by a random offset, so that every position is visible equally often
    (a block alone would rarely cover the border).

    The random draws (one aspect ratio, the block's corner, the roll offset per image, from
    torch's generator) are those of LightlySSL 1.6, so the same seed gives the same masks.
    Only these scalars are drawn per image; the masks themselves are built for the whole
    batch at once.

    Args:
        size: ``(batch_size, sequence_length)``; ``sequence_length - num_prefix_tokens``
            patches must form a square grid.
        mask_ratio: Fraction of patches to mask.
        num_prefix_tokens: Class / register tokens before the patches; never masked.
        min_aspect: Smallest height / width ratio of the visible block.
        max_aspect: Largest ratio; ``None`` (or 0) for ``1 / min_aspect``.
        roll: Shift the visible pattern cyclically by a random offset.
        device: Device of the returned indices.
        generator: Optional CPU random generator.

    Returns:
        ``(idx_keep, idx_mask)``, int64 token indices of shapes
        (batch_size, num_prefix_tokens + num_visible) and (batch_size, num_masked), each
        sorted ascending after the prefix tokens.

    Raises:
        ValueError: If the patches do not form a square grid.

    Example:
        >>> idx_keep, idx_mask = random_inverse_block_mask((2, 1 + 16), mask_ratio=0.75)
        >>> idx_keep.shape, idx_mask.shape
        (torch.Size([2, 5]), torch.Size([2, 12]))
    """
    batch_size, sequence_length = size
    side = _square_patch_grid(sequence_length, num_prefix_tokens, "random_inverse_block_mask")
    num_patches = side * side
    num_visible = num_patches - int(num_patches * mask_ratio)
    max_aspect = max_aspect or 1.0 / min_aspect
    # Aspect ratios whose block (area ~ num_visible) fits into the side x side grid.
    low = max(math.log(min_aspect), math.log(num_visible / side**2)) if num_visible else 0.0
    high = min(math.log(max_aspect), math.log(side**2 / (num_visible + 1e-5)))

    # Per image: (top, left, block height, block width, row shift, column shift).
    params: list[tuple[int, ...]] = []
    for _ in range(batch_size):
        if num_visible in (0, num_patches):
            params.append((0, 0, side, side, 0, 0))  # all or nothing: no draw
            continue
        aspect = math.exp(float(torch.empty(1).uniform_(low, high, generator=generator)))
        height = min(side, math.ceil(math.sqrt(num_visible * aspect)))
        width = min(side, math.ceil(math.sqrt(num_visible / aspect)))
        top = int(torch.randint(0, side - height + 1, (1,), generator=generator))
        left = int(torch.randint(0, side - width + 1, (1,), generator=generator))
        shifts = [0, 0]
        if roll:
            shifts = [int(torch.randint(0, side, (1,), generator=generator)) for _ in range(2)]
        params.append((top, left, height, width, *shifts))

    # Build all masks at once; every parameter is a (B, 1, 1) column.
    tops, lefts, heights, widths, row_shifts, col_shifts = (
        torch.tensor(params, dtype=torch.long).reshape(batch_size, 6, 1, 1).unbind(1)
    )
    coords = torch.arange(side)
    # Undo the roll: position (r, c) shows the unrolled pattern at (r - shift) mod side.
    rows = (coords.view(1, side, 1) - row_shifts) % side - tops  # relative to the block
    cols = (coords.view(1, 1, side) - col_shifts) % side - lefts
    inside = (rows >= 0) & (rows < heights) & (cols >= 0) & (cols < widths)
    # The block covers at least num_visible patches; keep its first num_visible, row-major.
    visible = inside & (rows * widths + cols < num_visible)  # (B, side, side)
    # Stable sort: visible patches first, each group in ascending order.
    order = torch.argsort((~visible).flatten(1).to(torch.uint8), dim=1, stable=True)
    idx_keep, idx_mask = _with_prefix(order, num_visible, num_prefix_tokens)
    return idx_keep.to(device), idx_mask.to(device)
