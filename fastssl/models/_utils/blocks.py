"""Module trees of vision transformers: leaf modules and stochastic depth (drop path).

Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth",
https://arxiv.org/abs/1603.09382) drops a residual branch for a random subset of the
samples during training; ViTs trained with it (DeiT, DINO, iBOT, I-JEPA) regularise deep
models this way. Public path: :mod:`fastssl.models.utils`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer


def get_named_leaf_modules(module: nn.Module) -> dict[str, nn.Module]:
    """Returns the modules of ``module`` that have no children, by qualified name.

    Args:
        module: Any module (a module without children is its own leaf, named "").

    Returns:
        Dict from name (as in ``named_modules``) to leaf module, in registration order.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.ReLU()))
        >>> list(get_named_leaf_modules(model))
        ['0', '1.0']
    """
    return {name: m for name, m in module.named_modules() if next(m.children(), None) is None}


def add_stochastic_depth_to_blocks(vit: nn.Module, prob: float = 0.0, mode: str = "row") -> None:
    """Adds stochastic depth to both residual branches of every torchvision ViT block.

    Each ``torchvision.models.vision_transformer.EncoderBlock`` in ``vit`` gets its
    attention branch (``dropout``) and its MLP branch (``mlp``) wrapped as
    ``Sequential(branch, StochasticDepth(prob, mode))``, in place. The parameter names
    become ``mlp.0.…`` as with LightlySSL, so checkpoints are exchangeable.

    Args:
        vit: Module holding torchvision ``EncoderBlock`` s (e.g. a ``VisionTransformer``).
        prob: Probability of dropping a branch; nothing changes when it is <= 0.
        mode: ``"row"`` drops the branch per sample, ``"batch"`` for the whole batch.

    Example:
        >>> from torchvision.models import VisionTransformer
        >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
        >>> add_stochastic_depth_to_blocks(vit, prob=0.1)
        >>> type(vit.encoder.layers[0].mlp[1]).__name__
        'StochasticDepth'
    """
    from torchvision.models.vision_transformer import EncoderBlock
    from torchvision.ops import StochasticDepth

    if prob <= 0:
        return
    for block in vit.modules():
        if isinstance(block, EncoderBlock):
            block.dropout = nn.Sequential(block.dropout, StochasticDepth(p=prob, mode=mode))
            block.mlp = nn.Sequential(block.mlp, StochasticDepth(p=prob, mode=mode))


def update_drop_path_rate(
    model: VisionTransformer,
    drop_path_rate: float,
    mode: str = "linear",
) -> None:
    """Sets the drop path rate of every block of a timm ``VisionTransformer``, in place.

    Block ``i`` of ``L`` gets ``drop_path_rate * i / (L - 1)`` with ``mode="linear"`` (the
    schedule of stochastic depth: deeper blocks are dropped more often) and
    ``drop_path_rate`` with ``mode="uniform"``. Both residual branches (``drop_path1`` and
    ``drop_path2``) become ``timm.layers.DropPath`` of that rate, or ``Identity`` where it
    is 0.

    LightlySSL 1.6 computes the linear schedule but then gives every block with a
    non-zero rate the full ``drop_path_rate`` (only the first block stays at 0); here each
    block gets its own rate, as its documentation and timm's ``drop_path_rate`` describe.
    ``mode="uniform"`` is identical.

    Args:
        model: timm ``VisionTransformer`` (anything with ``blocks`` of timm ``Block`` s).
        drop_path_rate: Largest drop path rate, in [0, 1].
        mode: ``"linear"`` or ``"uniform"``.

    Raises:
        ValueError: If ``mode`` is unknown.
    """
    from timm.layers import DropPath

    depth = len(model.blocks)
    if mode == "linear":
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
    elif mode == "uniform":
        rates = [drop_path_rate] * depth
    else:
        raise ValueError(
            f"update_drop_path_rate: unknown 'mode' {mode!r}, supported modes are 'linear' "
            "and 'uniform'."
        )
    for block, rate in zip(model.blocks, rates, strict=True):
        block.drop_path1 = DropPath(drop_prob=rate) if rate > 0 else nn.Identity()
        block.drop_path2 = DropPath(drop_prob=rate) if rate > 0 else nn.Identity()
