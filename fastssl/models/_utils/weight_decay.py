"""Optimizer parameter groups: which parameters get weight decay.

Public path: :mod:`fastssl.models.utils`.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn
from torch.nn.modules import CrossMapLRN2d, GroupNorm, LayerNorm, LocalResponseNorm
from torch.nn.modules.batchnorm import _NormBase

#: The normalisation layers: no weight decay on their parameters, here and in the trainer's
#: parameter groups (:func:`fastssl.train.optim.param_groups`).
NORM_LAYERS: tuple[type[nn.Module], ...] = (
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
    norm_layers: tuple[type[nn.Module], ...] = NORM_LAYERS,
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
