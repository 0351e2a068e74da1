"""Helpers shared by the self-supervised models: momentum, shuffling, tokens and masks.

Same names, signatures and return structures as LightlySSL 1.6's ``lightly.models.utils``
for the functions that AIM, Barlow Twins, BYOL, DCL, DenseCL, DINO(v2), MAE, MoCo, MSN,
NNCLR, PMSN, SimCLR, SimMIM, SimSiam, SwaV, TiCo and VICReg(L) use. Differences that a user
can notice are listed in each docstring; the main ones:

* :func:`update_momentum` is one ``torch._foreach_lerp_`` over all parameters (one pass
  over memory instead of two).
* Random functions accept an optional ``generator`` so a seed fixes them without touching
  the global random state; :func:`random_block_mask` draws from torch, not Python's
  ``random`` module.
* :func:`batch_shuffle_distributed` needs no broadcast: every process derives the same
  permutation from random keys that are gathered from all processes.
* :func:`pool_masked` honours ``reduce`` for batched inputs and works for unbatched ones.

Example:
    >>> import copy
    >>> model = torch.nn.Linear(4, 2)
    >>> model_ema = copy.deepcopy(model)
    >>> deactivate_requires_grad(model_ema)
    >>> update_momentum(model, model_ema, m=0.99)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules import CrossMapLRN2d, GroupNorm, LayerNorm, LocalResponseNorm
from torch.nn.modules.batchnorm import _NormBase

from fastssl.utils import dist

_DeviceLike = torch.device | str | None

# ----------------------------------------------------------------------------------------
# Momentum encoders and gradients
# ----------------------------------------------------------------------------------------


def deactivate_requires_grad(model: nn.Module) -> None:
    """Freezes all parameters of ``model`` (``requires_grad = False``).

    Used for momentum (teacher) encoders that are updated by :func:`update_momentum`
    rather than by the optimizer.

    Args:
        model: Module whose parameters are frozen in place.

    Example:
        >>> head = torch.nn.Linear(4, 2)
        >>> deactivate_requires_grad(head)
        >>> head.weight.requires_grad
        False
    """
    for param in model.parameters():
        param.requires_grad = False


def activate_requires_grad(model: nn.Module) -> None:
    """Unfreezes all parameters of ``model`` (``requires_grad = True``).

    Args:
        model: Module whose parameters are unfrozen in place.

    Example:
        >>> head = torch.nn.Linear(4, 2)
        >>> deactivate_requires_grad(head)
        >>> activate_requires_grad(head)
        >>> head.weight.requires_grad
        True
    """
    for param in model.parameters():
        param.requires_grad = True


def deactivate_drop_path(model: nn.Module) -> nn.Module:
    """Turns stochastic depth off in ``model``, in place, and returns it.

    A teacher or momentum encoder copied from a student built with drop path (DINO's
    ViT-S/16: 0.1) must see whole networks, as in the papers, where the teacher is built
    without it. Covers timm's ``DropPath`` (``drop_prob``) and torchvision's
    ``StochasticDepth`` (``p``).

    Args:
        model: Module whose stochastic-depth layers are switched off.

    Returns:
        ``model``.

    Example:
        >>> from torchvision.ops import StochasticDepth
        >>> block = torch.nn.Sequential(torch.nn.Linear(4, 4), StochasticDepth(0.1, "row"))
        >>> deactivate_drop_path(block)[1].p
        0.0
    """
    from torchvision.ops import StochasticDepth

    for module in model.modules():
        if isinstance(module, StochasticDepth):
            module.p = 0.0
        elif type(module).__name__ == "DropPath" and hasattr(module, "drop_prob"):
            setattr(module, "drop_prob", 0.0)  # noqa: B010 - timm.layers.DropPath (timm is optional)
    return model


def momentum_copy(model: nn.Module) -> nn.Module:
    """A teacher / momentum copy of ``model``: a deep copy with frozen parameters
    (:func:`deactivate_requires_grad`) and stochastic depth off (:func:`deactivate_drop_path`),
    to be moved by :func:`update_momentum`.

    Args:
        model: The online (student) module.

    Returns:
        The copy; ``model`` is unchanged.

    Example:
        >>> head = torch.nn.Linear(4, 2)
        >>> momentum_copy(head).weight.requires_grad, head.weight.requires_grad
        (False, True)
    """
    copy_ = deactivate_drop_path(copy.deepcopy(model))
    deactivate_requires_grad(copy_)
    return copy_


@torch.no_grad()
def update_momentum(model: nn.Module, model_ema: nn.Module, m: float) -> None:
    """Updates ``model_ema`` in place with an exponential moving average of ``model``.

    Momentum encoders (MoCo, He et al. 2020; BYOL, Grill et al. 2020) compute, for every
    parameter, ``ema = m * ema + (1 - m) * param``. Here it is written as the equivalent
    ``ema = lerp(ema, param, 1 - m)`` and applied to all parameters with a single
    ``torch._foreach_lerp_``: on a GPU that is a handful of multi-tensor kernels that read
    ``ema`` and ``param`` once and write ``ema`` once, where a multiply followed by an add
    reads and writes ``ema`` twice. The result agrees with the two-step formula up to float
    rounding (a few ulp). Buffers (e.g. BatchNorm running statistics) are not touched,
    as in LightlySSL: each encoder keeps its own.

    Args:
        model: The online model, read only.
        model_ema: The momentum model, updated in place. Its ``parameters()`` must pair up
            with those of ``model`` (same count, same shapes, same order).
        m: Momentum in [0, 1]; 1 keeps ``model_ema`` unchanged, 0 copies ``model``.

    Raises:
        ValueError: If ``m`` is outside [0, 1] or the two models have different numbers
            of parameters.

    Example:
        >>> import copy
        >>> backbone = torch.nn.Linear(4, 2)
        >>> backbone_momentum = copy.deepcopy(backbone)
        >>> update_momentum(backbone, backbone_momentum, m=0.996)
    """
    m = float(m)
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"update_momentum: 'm' must be in [0, 1], got m={m}.")
    params: list[Tensor] = list(model.parameters())
    ema_params: list[Tensor] = list(model_ema.parameters())
    if len(params) != len(ema_params):
        raise ValueError(
            f"update_momentum: 'model' has {len(params)} parameters but 'model_ema' has "
            f"{len(ema_params)}; pass two copies of the same architecture."
        )
    if not ema_params:
        return
    # lerp needs matching dtypes and devices pair by pair; a mixed-precision EMA copy
    # (e.g. bf16 teacher of an fp32 student) gets a converted copy of the online value.
    sources = [
        p if (p.dtype == e.dtype and p.device == e.device) else p.to(e.device, e.dtype)
        for p, e in zip(params, ema_params, strict=True)
    ]
    torch._foreach_lerp_(ema_params, sources, 1.0 - m)


@torch.no_grad()
def normalize_weight(weight: nn.Parameter, dim: int = 1, keepdim: bool = True) -> None:
    """Rescales ``weight`` in place to unit L2 norm along ``dim`` (SwaV prototypes).

    Args:
        weight: Parameter of any shape, e.g. (num_prototypes, dim).
        dim: Dimension along which the norm is taken.
        keepdim: Keep ``dim`` in the norm so that it broadcasts back (LightlySSL's flag).

    Example:
        >>> w = torch.nn.Parameter(torch.randn(3, 4))
        >>> normalize_weight(w)
        >>> torch.allclose(w.norm(dim=1), torch.ones(3))
        True
    """
    weight.div_(torch.linalg.vector_norm(weight, dim=dim, keepdim=keepdim))


def _no_grad_trunc_normal(
    tensor: Tensor,
    mean: float,
    std: float,
    a: float,
    b: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Fills ``tensor`` in place from a normal distribution truncated to [a, b] (DINO head).

    Inverse-CDF sampling: a uniform draw between the normal CDF values of ``a`` and ``b``
    is mapped back through the inverse CDF (``erfinv``). This is LightlySSL's (and timm's)
    method, so a seed gives LightlySSL's values; recent ``torch.nn.init.trunc_normal_``
    draws differently.

    Args:
        tensor: Tensor to fill.
        mean: Mean of the normal distribution.
        std: Standard deviation of the normal distribution.
        a: Lower cut-off.
        b: Upper cut-off.
        generator: Optional random generator.

    Returns:
        ``tensor``.
    """

    def std_normal_cdf(value: float) -> float:
        return 0.5 * (1.0 + math.erf(value / math.sqrt(2.0)))

    low = 2.0 * std_normal_cdf((a - mean) / std) - 1.0
    high = 2.0 * std_normal_cdf((b - mean) / std) - 1.0
    with torch.no_grad():
        # erf(x / sqrt(2)) is uniform on [low, high] exactly when x is a standard normal
        # truncated to the cut-offs; erfinv undoes it.
        tensor.uniform_(low, high, generator=generator).erfinv_()
        tensor.mul_(std * math.sqrt(2.0)).add_(mean).clamp_(min=a, max=b)
    return tensor


# ----------------------------------------------------------------------------------------
# Batch shuffling (MoCo's shuffled BatchNorm)
# ----------------------------------------------------------------------------------------


def _inverse_permutation(perm: Tensor) -> Tensor:
    """Returns ``inv`` with ``inv[perm[i]] = i`` (an O(n) scatter instead of an argsort)."""
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel(), device=perm.device)
    return inverse


@torch.no_grad()
def batch_shuffle(
    batch: Tensor, distributed: bool = False, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Shuffles ``batch`` along dim 0 (MoCo's shuffled BatchNorm, He et al. 2020).

    Args:
        batch: Tensor of shape (B, ...).
        distributed: If True, shuffle across all processes with
            :func:`batch_shuffle_distributed`.
        generator: Optional random generator on ``batch``'s device. Without one the
            global generator is used, which reproduces LightlySSL under the same seed.

    Returns:
        ``(shuffled, shuffle)``: the shuffled batch of shape (B, ...) and the permutation
        of shape (B,) that :func:`batch_unshuffle` needs to restore the order.

    Example:
        >>> x = torch.arange(4)
        >>> shuffled, shuffle = batch_shuffle(x)
        >>> torch.equal(batch_unshuffle(shuffled, shuffle), x)
        True
    """
    if distributed:
        return batch_shuffle_distributed(batch, generator=generator)
    shuffle = torch.randperm(batch.shape[0], device=batch.device, generator=generator)
    return batch[shuffle], shuffle


@torch.no_grad()
def batch_unshuffle(batch: Tensor, shuffle: Tensor, distributed: bool = False) -> Tensor:
    """Restores the order of a batch shuffled by :func:`batch_shuffle`.

    Args:
        batch: Shuffled tensor of shape (B, ...), e.g. the momentum encoder's output.
        shuffle: The permutation returned by :func:`batch_shuffle`.
        distributed: Must match the ``distributed`` flag given to :func:`batch_shuffle`.

    Returns:
        Tensor of shape (B, ...) in the original order.
    """
    if distributed:
        return batch_unshuffle_distributed(batch, shuffle)
    return batch[_inverse_permutation(shuffle)]


@torch.no_grad()
def concat_all_gather(x: Tensor) -> Tensor:
    """Concatenates ``x`` from all processes along dim 0, without gradient.

    Args:
        x: Tensor of shape (B, ...), the same shape on every process.

    Returns:
        Tensor of shape (B * world_size, ...) ordered by rank; ``x`` when not distributed
        (LightlySSL 1.6 fails there).
    """
    return dist.gather_cat(x)


@torch.no_grad()
def batch_shuffle_distributed(
    batch: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Shuffles the global batch across processes (MoCo, He et al. 2020).

    The global batch (every process's batch, in rank order) is permuted and each process
    keeps its slice of the permuted batch. All processes must use the same permutation.
    MoCo draws it on rank 0 and broadcasts it; here every process draws one random key per
    local sample, the keys are gathered (so every process holds the same vector of
    ``B * world_size`` keys), and the permutation is the stable argsort of that vector. This
    needs no broadcast and no host synchronisation, and sorting i.i.d. keys gives a uniformly
    random permutation (stability only breaks ties, deterministically on every process).

    Args:
        batch: Tensor of shape (B, ...), the same shape on every process.
        generator: Optional random generator for the keys (its own device is used).

    Returns:
        ``(shuffled, shuffle)``: this process's slice of shape (B, ...) of the permuted
        global batch, and the global inverse permutation of shape (B * world_size,) that
        :func:`batch_unshuffle_distributed` needs.
    """
    device = generator.device if generator is not None else batch.device
    keys = torch.rand(batch.shape[0], device=device, generator=generator).to(batch.device)
    all_keys = dist.gather_cat(keys)
    all_batch = dist.gather_cat(batch)
    perm = torch.argsort(all_keys, stable=True)
    local = perm.view(dist.world_size(), -1)[dist.rank()]
    return all_batch[local], _inverse_permutation(perm)


@torch.no_grad()
def batch_unshuffle_distributed(batch: Tensor, shuffle: Tensor) -> Tensor:
    """Undoes :func:`batch_shuffle_distributed`.

    Args:
        batch: Tensor of shape (B, ...), this process's slice of the shuffled batch.
        shuffle: The inverse permutation of shape (B * world_size,) returned by
            :func:`batch_shuffle_distributed`.

    Returns:
        Tensor of shape (B, ...): this process's original samples, in their original order.
    """
    all_batch = dist.gather_cat(batch)
    local = shuffle.view(dist.world_size(), -1)[dist.rank()]
    return all_batch[local]


# ----------------------------------------------------------------------------------------
# Tokens (vision transformers, MAE, SimMIM, MSN, AIM)
# ----------------------------------------------------------------------------------------


def repeat_token(token: Tensor, size: tuple[int, int]) -> Tensor:
    """Repeats a token over a batch of sequences.

    Returns a broadcast view of ``token`` (no copy); gradients sum back into ``token``.
    Write into the result only after a ``.clone()``.

    Args:
        token: Tensor of shape (1, 1, dim).
        size: ``(batch_size, sequence_length)``.

    Returns:
        Tensor of shape (batch_size, sequence_length, dim).

    Example:
        >>> repeat_token(torch.zeros(1, 1, 8), (2, 3)).shape
        torch.Size([2, 3, 8])
    """
    batch_size, sequence_length = size
    return token.expand(batch_size, sequence_length, -1)


def expand_index_like(index: Tensor, tokens: Tensor) -> Tensor:
    """Broadcasts a token index along the feature dimension of ``tokens``.

    Args:
        index: Tensor of shape (batch_size, index_length) with entries in
            [0, sequence_length).
        tokens: Tensor of shape (batch_size, sequence_length, dim).

    Returns:
        Index of shape (batch_size, index_length, dim) (a view), ready for gather/scatter.
    """
    return index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])


def get_at_index(tokens: Tensor, index: Tensor) -> Tensor:
    """Selects tokens by index.

    Args:
        tokens: Tensor of shape (batch_size, sequence_length, dim).
        index: Tensor of shape (batch_size, index_length).

    Returns:
        Tensor of shape (batch_size, index_length, dim) with
        ``out[b, i] = tokens[b, index[b, i]]``.

    Example:
        >>> tokens = torch.arange(6.0).view(1, 3, 2)
        >>> get_at_index(tokens, torch.tensor([[2, 0]])).tolist()
        [[[4.0, 5.0], [0.0, 1.0]]]
    """
    return torch.gather(tokens, 1, expand_index_like(index, tokens))


def set_at_index(tokens: Tensor, index: Tensor, value: Tensor | float) -> Tensor:
    """Returns a copy of ``tokens`` with the tokens at ``index`` replaced by ``value``.

    Args:
        tokens: Tensor of shape (batch_size, sequence_length, dim).
        index: Tensor of shape (batch_size, index_length).
        value: Tensor of shape (batch_size, index_length, dim), or a scalar.

    Returns:
        Tensor of shape (batch_size, sequence_length, dim).
    """
    return torch.scatter(tokens, 1, expand_index_like(index, tokens), value)


def _bool_mask_at_index(tokens: Tensor, index: Tensor) -> Tensor:
    """Returns the (batch_size, sequence_length) boolean mask that is True at ``index``."""
    mask = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    return mask.scatter_(1, index, True)


def mask_at_index(tokens: Tensor, index: Tensor, mask_token: Tensor) -> Tensor:
    """Replaces the tokens at ``index`` by ``mask_token`` (SimMIM-style masking).

    Uses ``torch.where`` on a boolean mask, so a NaN or inf in a replaced token does not
    leak into the output (LightlySSL's ``(1 - mask) * tokens`` multiplies it by 0).

    Args:
        tokens: Tensor of shape (batch_size, sequence_length, dim).
        index: Tensor of shape (batch_size, index_length).
        mask_token: Tensor of shape (1, 1, dim).

    Returns:
        Tensor of shape (batch_size, sequence_length, dim).
    """
    mask = _bool_mask_at_index(tokens, index).unsqueeze(-1)
    return torch.where(mask, mask_token, tokens)


def mask_bool(tokens: Tensor, mask: Tensor, mask_token: Tensor) -> Tensor:
    """Replaces ``tokens[i, j]`` by ``mask_token`` wherever ``mask[i, j]`` is True.

    Args:
        tokens: Tensor of shape (batch_size, sequence_length, dim).
        mask: Tensor of shape (batch_size, sequence_length), bool or 0/1 values.
        mask_token: Tensor of shape (1, 1, dim).

    Returns:
        Tensor of shape (batch_size, sequence_length, dim).

    Example:
        >>> mask = torch.tensor([[True, False]])
        >>> out = mask_bool(torch.ones(1, 2, 3), mask, torch.zeros(1, 1, 3))
        >>> out[0, :, 0].tolist()
        [0.0, 1.0]
    """
    return torch.where(mask.bool().unsqueeze(-1), mask_token, tokens)


def prepend_class_token(tokens: Tensor, class_token: Tensor) -> Tensor:
    """Prepends ``class_token`` to every sequence.

    Args:
        tokens: Tensor of shape (batch_size, sequence_length, dim).
        class_token: Tensor of shape (1, 1, dim).

    Returns:
        Tensor of shape (batch_size, sequence_length + 1, dim) with the class token at 0.
    """
    return torch.cat([class_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Cuts images into flattened, non-overlapping patches (MAE, He et al. 2021).

    Patches are ordered row by row; each patch is flattened as (patch_row, patch_col,
    channel), the order MAE's pixel-reconstruction target uses.

    Args:
        images: Tensor of shape (B, C, H, W); H and W must be multiples of ``patch_size``
            (LightlySSL also requires H == W; here rectangles are allowed).
        patch_size: Side of a square patch, in pixels.

    Returns:
        Tensor of shape (B, (H // patch_size) * (W // patch_size), patch_size**2 * C).

    Raises:
        ValueError: If H or W is not a multiple of ``patch_size``.

    Example:
        >>> patchify(torch.zeros(2, 3, 32, 32), patch_size=8).shape
        torch.Size([2, 16, 192])
    """
    n, c, h, w = images.shape
    if patch_size <= 0 or h % patch_size or w % patch_size:
        raise ValueError(
            f"patchify: image size {h}x{w} must be a multiple of 'patch_size', "
            f"got patch_size={patch_size}."
        )
    gh, gw = h // patch_size, w // patch_size
    patches = images.reshape(n, c, gh, patch_size, gw, patch_size)
    patches = patches.permute(0, 2, 4, 3, 5, 1)  # (n, gh, gw, p, q, c)
    return patches.reshape(n, gh * gw, patch_size * patch_size * c)


def unpatchify(patches: Tensor, patch_size: int, channels: int = 3) -> Tensor:
    """Reassembles square images from the output of :func:`patchify`.

    Args:
        patches: Tensor of shape (B, N, patch_size**2 * channels) with N a perfect square.
        patch_size: Side of a patch, in pixels.
        channels: Number of image channels.

    Returns:
        Tensor of shape (B, channels, sqrt(N) * patch_size, sqrt(N) * patch_size).

    Raises:
        ValueError: If N is not a perfect square or the last dimension is not
            ``patch_size**2 * channels``.

    Example:
        >>> x = torch.randn(2, 3, 16, 16)
        >>> torch.equal(unpatchify(patchify(x, 4), 4, channels=3), x)
        True
    """
    n, num_patches, patch_dim = patches.shape
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(
            f"unpatchify: the number of patches must be a perfect square, got {num_patches}."
        )
    if patch_dim != patch_size * patch_size * channels:
        raise ValueError(
            f"unpatchify: the patch dimension {patch_dim} does not match "
            f"patch_size={patch_size} and channels={channels} "
            f"(expected {patch_size * patch_size * channels})."
        )
    images = patches.reshape(n, side, side, patch_size, patch_size, channels)
    images = images.permute(0, 5, 1, 3, 2, 4)  # (n, c, gh, p, gw, q)
    return images.reshape(n, channels, side * patch_size, side * patch_size)


# ----------------------------------------------------------------------------------------
# Random masks
# ----------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------
# Dense features (DenseCL, VICRegL, DetCon)
# ----------------------------------------------------------------------------------------

_REDUCTIONS = ("sum", "mean", "prod", "amax", "amin")


def pool_masked(source: Tensor, mask: Tensor, num_cls: int, reduce: str = "mean") -> Tensor:
    """Pools feature maps over the regions given by an integer mask (DetCon, Hénaff 2021).

    ``out[..., c, k]`` reduces ``source[..., c, i, j]`` over the pixels with
    ``mask[..., i, j] == k``; a class with no pixel gives 0. LightlySSL 1.6 ignores
    ``reduce`` for batched inputs and fails on unbatched ones; both work here.

    Args:
        source: Float tensor of shape (B, C, H, W) or (C, H, W).
        mask: Integer tensor of shape (B, H, W) or (H, W) with values in [0, num_cls).
        num_cls: Number of classes.
        reduce: One of "sum", "mean", "prod", "amax", "amin".

    Returns:
        Tensor of shape (B, C, num_cls) or (C, num_cls).

    Raises:
        ValueError: If ``source`` is not 3- or 4-dimensional or ``reduce`` is unknown.

    Example:
        >>> pool_masked(torch.ones(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), 2).tolist()
        [[[1.0, 0.0], [1.0, 0.0]]]
    """
    if reduce not in _REDUCTIONS:
        raise ValueError(f"pool_masked: 'reduce' must be one of {_REDUCTIONS}, got {reduce!r}.")
    if source.dim() == 3:
        return pool_masked(source.unsqueeze(0), mask.unsqueeze(0), num_cls, reduce).squeeze(0)
    if source.dim() != 4:
        raise ValueError(
            f"pool_masked: 'source' must have shape (B, C, H, W) or (C, H, W), "
            f"got {tuple(source.shape)}."
        )
    b, c = source.shape[:2]
    flat = source.flatten(2)  # (B, C, HW)
    index = mask.reshape(b, 1, -1).long()  # (B, 1, HW), broadcast over channels below
    if reduce in ("sum", "mean"):
        out = flat.new_zeros(b, c, num_cls).scatter_add(2, index.expand(-1, c, -1), flat)
        if reduce == "mean":
            # Counts per class do not depend on the channel: count once, divide all.
            ones = flat.new_ones(b, 1, index.shape[-1])
            counts = flat.new_zeros(b, 1, num_cls).scatter_add(2, index, ones)
            out = out / counts.clamp_min(1)
        return out
    # include_self=False leaves empty classes at their initial 0.
    return flat.new_zeros(b, c, num_cls).scatter_reduce(
        2, index.expand(-1, c, -1), flat, reduce=reduce, include_self=False
    )


def nearest_neighbors(
    input_maps: Tensor,
    candidate_maps: Tensor,
    distances: Tensor,
    num_matches: int | None,
) -> tuple[Tensor, Tensor]:
    """Matches local features to their nearest candidates and keeps the best matches.

    The local-matching step of VICRegL (Bardes et al. 2022): each input feature is paired
    with its nearest candidate; the ``num_matches`` pairs with the smallest distance are
    kept.

    Args:
        input_maps: Tensor of shape (B, N, D).
        candidate_maps: Tensor of shape (B, M, D).
        distances: Tensor of shape (B, N, M), distance from input i to candidate j.
        num_matches: Pairs to keep per sample; None, -1 or more than N keep all N.

    Returns:
        ``(inputs, candidates)``, both of shape (B, num_matches, D): matched pairs ordered
        by increasing distance.
    """
    num_inputs = input_maps.shape[1]
    if num_matches is None or num_matches == -1 or num_matches > num_inputs:
        num_matches = num_inputs
    nearest_dist, nearest_idx = distances.min(dim=2)  # (B, N) each
    best = nearest_dist.topk(num_matches, dim=1, largest=False).indices  # (B, num_matches)
    inputs = get_at_index(input_maps, best)
    candidates = get_at_index(candidate_maps, torch.gather(nearest_idx, 1, best))
    return inputs, candidates


def most_similar_index(x: Tensor, y: Tensor) -> Tensor:
    """Index of the most cosine-similar feature of ``y`` for every feature of ``x`` (DenseCL).

    Args:
        x: Tensor of shape (B, N, C).
        y: Tensor of shape (B, M, C).

    Returns:
        Long tensor of shape (B, N) such that ``y[b, out[b, i]]`` is the feature of
        ``y[b]`` most similar to ``x[b, i]``.
    """
    x = nn.functional.normalize(x, dim=-1)
    y = nn.functional.normalize(y, dim=-1)
    return torch.bmm(x, y.transpose(1, 2)).argmax(dim=2)


def select_most_similar(x: Tensor, y: Tensor, y_values: Tensor) -> Tensor:
    """For every feature of ``x``, the row of ``y_values`` at its most similar ``y`` (DenseCL).

    Args:
        x: Tensor of shape (B, N, C).
        y: Tensor of shape (B, M, C).
        y_values: Tensor of shape (B, M, D).

    Returns:
        Tensor of shape (B, N, D).
    """
    return get_at_index(y_values, most_similar_index(x, y))


# ----------------------------------------------------------------------------------------
# Optimizer parameter groups
# ----------------------------------------------------------------------------------------

_NORM_LAYERS: tuple[type[nn.Module], ...] = (
    _NormBase,
    LayerNorm,
    CrossMapLRN2d,
    LocalResponseNorm,
    GroupNorm,
)


def get_weight_decay_parameters(
    modules: Iterable[nn.Module],
    decay_norm: bool = False,
    decay_bias: bool = False,
    norm_layers: tuple[type[nn.Module], ...] = _NORM_LAYERS,
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Splits parameters into those that get weight decay and those that do not.

    Args:
        modules: Modules whose parameters are split (each module is walked recursively).
        decay_norm: If True, parameters of normalization layers are decayed.
        decay_bias: If True, parameters named ``*bias`` are decayed.
        norm_layers: Classes counted as normalization layers.

    Returns:
        ``(params, params_no_weight_decay)`` in module order.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
        >>> decay, no_decay = get_weight_decay_parameters([model])
        >>> len(decay), len(no_decay)
        (1, 3)
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in modules:
        for submodule in module.modules():
            is_norm = isinstance(submodule, norm_layers)
            for name, param in submodule.named_parameters(recurse=False):
                if is_norm:
                    (decay if decay_norm else no_decay).append(param)
                elif not decay_bias and name.endswith("bias"):
                    no_decay.append(param)
                else:
                    decay.append(param)
    return decay, no_decay


# ----------------------------------------------------------------------------------------
# Positional embeddings and normalization
# ----------------------------------------------------------------------------------------


def get_1d_sine_cosine_positional_embedding_from_positions(
    embed_dim: int, pos: np.ndarray
) -> np.ndarray:
    """Sine-cosine embedding of scalar positions (Vaswani et al. 2017, as in MAE).

    Args:
        embed_dim: Output dimension D, even.
        pos: Array of positions of any shape, flattened to (P,).

    Returns:
        Float32 array of shape (P, D): ``[sin(pos * w_0..w_{D/2-1}), cos(...)]`` with
        ``w_i = 10000 ** (-i / (D / 2))``.

    Raises:
        ValueError: If ``embed_dim`` is odd.
    """
    if embed_dim % 2:
        raise ValueError(f"'embed_dim' must be even for a sine-cosine embedding, got {embed_dim}.")
    half = embed_dim // 2
    inv_freq = 1.0 / 10000.0 ** (np.arange(half, dtype=np.float64) / half)
    angles = np.outer(np.asarray(pos, dtype=np.float64).reshape(-1), inv_freq)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def get_2d_sine_cosine_positional_embedding_from_grid(
    embed_dim: int, grid: np.ndarray
) -> np.ndarray:
    """2D sine-cosine embedding of a grid of (x, y) coordinates (MAE, He et al. 2021).

    Args:
        embed_dim: Output dimension D, a multiple of 4.
        grid: Array of shape (2, ..., G, G): ``grid[0]`` holds the coordinate encoded in
            the first D/2 dimensions (MAE's column index), ``grid[1]`` the other one.

    Returns:
        Float32 array of shape (G * G, D).

    Raises:
        ValueError: If ``embed_dim`` is not a multiple of 4.
    """
    if embed_dim % 4:
        raise ValueError(
            f"'embed_dim' must be a multiple of 4 for a 2D sine-cosine embedding, got {embed_dim}."
        )
    first = get_1d_sine_cosine_positional_embedding_from_positions(embed_dim // 2, grid[0])
    second = get_1d_sine_cosine_positional_embedding_from_positions(embed_dim // 2, grid[1])
    return np.concatenate([first, second], axis=1)


def get_2d_sine_cosine_positional_embedding(
    embed_dim: int,
    grid_size: int,
    cls_token: bool = True,
    num_prefix_tokens: int | None = None,
) -> np.ndarray:
    """Fixed 2D sine-cosine positional embedding of a square patch grid (MAE).

    Patch ``k = row * grid_size + col`` gets the 1D embedding of ``col`` in its first
    ``embed_dim / 2`` dimensions and that of ``row`` in the others; prefix tokens get zeros.

    Args:
        embed_dim: Embedding dimension, a multiple of 4.
        grid_size: Patches per side.
        cls_token: Prepend one zero row for a class token (ignored if
            ``num_prefix_tokens`` is set).
        num_prefix_tokens: Number of zero rows to prepend (class and register tokens).

    Returns:
        Float32 array of shape (num_prefix + grid_size**2, embed_dim). (LightlySSL returns
        float64 when there are prefix tokens; the values agree.)

    Example:
        >>> get_2d_sine_cosine_positional_embedding(8, grid_size=2).shape
        (5, 8)
    """
    num_prefix = int(cls_token) if num_prefix_tokens is None else num_prefix_tokens
    coords = np.arange(grid_size, dtype=np.float64)
    rows, cols = np.meshgrid(coords, coords, indexing="ij")
    grid = np.stack([cols, rows])  # MAE encodes the column index first.
    embedding = get_2d_sine_cosine_positional_embedding_from_grid(embed_dim, grid)
    prefix = np.zeros((num_prefix, embed_dim), dtype=np.float32)
    return np.concatenate([prefix, embedding], axis=0)


# I-JEPA's name for the same embedding (LightlySSL keeps both).
get_2d_sincos_pos_embed = get_2d_sine_cosine_positional_embedding


def initialize_2d_sine_cosine_positional_embedding(
    pos_embedding: nn.Parameter,
    has_class_token: bool = True,
    num_prefix_tokens: int | None = None,
) -> None:
    """Fills ``pos_embedding`` with the fixed 2D sine-cosine embedding and freezes it.

    Args:
        pos_embedding: Parameter of shape (1, num_prefix + G * G, D).
        has_class_token: One prefix token (ignored if ``num_prefix_tokens`` is set).
        num_prefix_tokens: Number of prefix tokens.

    Raises:
        ValueError: If the number of patch positions is not a perfect square.
    """
    num_prefix = int(has_class_token) if num_prefix_tokens is None else num_prefix_tokens
    _, seq_length, embed_dim = pos_embedding.shape
    grid_size = math.isqrt(max(seq_length - num_prefix, 0))
    if grid_size * grid_size != seq_length - num_prefix:
        raise ValueError(
            f"initialize_2d_sine_cosine_positional_embedding: sequence length {seq_length} "
            f"minus {num_prefix} prefix tokens is not a square number of patches."
        )
    table = get_2d_sine_cosine_positional_embedding(
        embed_dim, grid_size, num_prefix_tokens=num_prefix
    )
    with torch.no_grad():
        pos_embedding.copy_(torch.from_numpy(table).unsqueeze(0))
    pos_embedding.requires_grad = False


def initialize_learnable_positional_embedding(
    pos_embedding: nn.Parameter, generator: torch.Generator | None = None
) -> None:
    """Initialises a learnable positional embedding like timm's ViT (truncated normal, std 0.02).

    Args:
        pos_embedding: Parameter to initialise in place; it is made trainable.
        generator: Optional random generator.
    """
    nn.init.trunc_normal_(pos_embedding, std=0.02, generator=generator)
    pos_embedding.requires_grad = True


_POS_EMBED_STRATEGIES = ("learn", "sincos", "skip")


def initialize_positional_embedding(
    pos_embedding: nn.Parameter,
    strategy: str,
    num_prefix_tokens: int,
) -> None:
    """Initialises a positional embedding by strategy.

    Args:
        pos_embedding: Parameter of shape (1, num_prefix_tokens + G * G, D).
        strategy: "learn" (trainable, truncated normal), "sincos" (fixed 2D sine-cosine)
            or "skip" (left as is).
        num_prefix_tokens: Number of prefix tokens (class and register tokens).

    Raises:
        ValueError: If ``strategy`` is unknown.
    """
    if strategy not in _POS_EMBED_STRATEGIES:
        raise ValueError(
            f"Invalid positional embedding strategy: {strategy!r}; "
            f"'strategy' must be one of {list(_POS_EMBED_STRATEGIES)}."
        )
    if strategy == "learn":
        initialize_learnable_positional_embedding(pos_embedding)
    elif strategy == "sincos":
        initialize_2d_sine_cosine_positional_embedding(
            pos_embedding, num_prefix_tokens=num_prefix_tokens
        )


def normalize_mean_var(x: Tensor, dim: int = -1, eps: float = 1.0e-6) -> Tensor:
    """Standardises ``x`` to zero mean and unit variance along ``dim`` (MAE's pixel targets).

    Uses the unbiased variance, as LightlySSL does.

    Args:
        x: Tensor of any shape.
        dim: Dimension to normalise over.
        eps: Added to the variance before the square root.

    Returns:
        Tensor of the shape of ``x``: ``(x - mean) / sqrt(var + eps)``.
    """
    var, mean = torch.var_mean(x, dim=dim, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps)
