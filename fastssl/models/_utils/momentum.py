"""Momentum (teacher) encoders: freezing, copying and EMA updates of parameters.

Also the in-place weight helpers of the heads these methods train: SwaV's prototype
normalisation (:func:`normalize_weight`) and the DINO head's truncated-normal
initialisation (:func:`_no_grad_trunc_normal`). Public path: :mod:`fastssl.models.utils`.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn


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
