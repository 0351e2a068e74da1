"""Synchronized batch normalization that works on every device, the CPU included.

``torch.nn.SyncBatchNorm`` refuses CPU tensors, so DDP runs with ``sync_batchnorm=True``
cannot be tested without GPUs. This module normalizes with the statistics of the global
batch on any device: each process contributes its per-channel count, mean and variance,
gathered *with gradient* through :func:`fastssl.utils.dist.gather_cat`, so the forward
and the backward pass equal batch normalization over the concatenated batch (Ioffe &
Szegedy 2015, "Batch Normalization"; synchronized across devices as in MegDet, Peng et
al. 2018). Outside distributed use it is plain batch normalization.

The opposite also lives here: :class:`SplitBatchNorm` simulates the per-device statistics
of a multi-GPU run on one device (LightlySSL's ``lightly.models.batchnorm``), and
:func:`get_norm_layer` picks it or ``BatchNorm2d``.

Example:
    >>> import torchvision
    >>> model = convert_sync_batchnorm(torchvision.models.resnet18())
    >>> # pl.Trainer(plugins=[SyncBatchNormPlugin()]) in place of sync_batchnorm=True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pytorch_lightning.plugins import LayerSync
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from fastssl.utils import dist


def _global_moments(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean and biased variance per channel of ``x`` over all processes, and the count.

    Args:
        x: Input of shape (B, C, *).

    Returns:
        ``(mean, var, count)``: shapes (C,), (C,) and () (the global count of values
        per channel). Gradients flow to every process's ``x``.
    """
    dims = [0, *range(2, x.dim())]
    count = torch.tensor(float(x.numel() // x.shape[1]), device=x.device, dtype=x.dtype)
    mean = x.mean(dim=dims)
    var = x.var(dim=dims, unbiased=False)
    stats = torch.cat([count.expand(1), mean, var]).unsqueeze(0)  # (1, 1 + 2C)
    stats = dist.gather_cat(stats)  # (world_size, 1 + 2C)
    counts, means, variances = (
        stats[:, :1],
        stats[:, 1 : 1 + x.shape[1]],
        stats[:, 1 + x.shape[1] :],
    )
    total = counts.sum()
    global_mean = (counts * means).sum(dim=0) / total
    # Law of total variance: within-process variance plus spread of process means.
    global_var = (counts * (variances + (means - global_mean) ** 2)).sum(dim=0) / total
    return global_mean, global_var, total


class SyncBatchNorm(_BatchNorm):
    """Batch normalization over the global batch of all processes, on any device.

    Same arguments, parameters and buffers as ``torch.nn.SyncBatchNorm`` (and the
    ``BatchNorm{1,2,3}d`` it replaces); inputs of shape (B, C, *).

    Args:
        num_features: Number of channels C.
        eps: Added to the variance for numerical stability.
        momentum: Running-statistics momentum (None: cumulative average).
        affine: Learn a per-channel scale and shift.
        track_running_stats: Keep running mean and variance for evaluation.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (B, C, ...), got {input.dim()}-D")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        use_batch_stats = self.training or not self.track_running_stats
        if not (use_batch_stats and dist.is_distributed()):
            return super().forward(input)
        mean, var, count = _global_moments(input)
        if self.training and self.track_running_stats:
            assert self.num_batches_tracked is not None
            assert self.running_mean is not None and self.running_var is not None
            self.num_batches_tracked.add_(1)
            momentum = (
                1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            )
            with torch.no_grad():
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        shape = (1, -1) + (1,) * (input.dim() - 2)
        out = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def _copy_norm(module: _BatchNorm, cls: type[_BatchNorm]) -> _BatchNorm:
    """A ``cls`` with the arguments, parameters, buffers and mode of ``module``."""
    copy = cls(
        module.num_features,
        eps=module.eps,
        momentum=module.momentum,
        affine=module.affine,
        track_running_stats=module.track_running_stats,
    )
    copy.load_state_dict(module.state_dict())
    if module.affine:
        copy.weight.requires_grad_(module.weight.requires_grad)
        copy.bias.requires_grad_(module.bias.requires_grad)
    copy.train(module.training)
    return copy.to(next(module.buffers(), torch.empty(0)).device)


def _replace(module: nn.Module, swap: Callable[[nn.Module], nn.Module | None]) -> nn.Module:
    """Applies ``swap`` to ``module`` and, where it returns None, to its children."""
    new = swap(module)
    if new is not None:
        return new
    for name, child in module.named_children():
        replaced = _replace(child, swap)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replaces every ``BatchNorm{1,2,3}d`` (and torch's SyncBatchNorm) in ``module``.

    Parameters, running statistics, ``requires_grad`` and train/eval mode are kept; the
    original class is remembered so :class:`SyncBatchNormPlugin` can revert.

    Args:
        module: Any module; converted in place where it has children.

    Returns:
        The converted module (a new object when ``module`` itself is a batch norm).
    """

    def swap(m: nn.Module) -> nn.Module | None:
        # A SplitBatchNorm already simulates several devices; its per-split statistics
        # have no counterpart in a synchronized batch norm.
        if not isinstance(m, _BatchNorm) or isinstance(m, SyncBatchNorm | SplitBatchNorm):
            return None
        synced = _copy_norm(m, SyncBatchNorm)
        synced.original_class = type(m)  # type: ignore[assignment]
        return synced

    return _replace(module, swap)


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Undoes :func:`convert_sync_batchnorm` (torch's SyncBatchNorm becomes BatchNorm2d)."""

    def swap(m: nn.Module) -> nn.Module | None:
        if not isinstance(m, SyncBatchNorm | nn.SyncBatchNorm):
            return None
        cls = m.__dict__.get("original_class", nn.BatchNorm2d)
        return _copy_norm(m, cls)

    return _replace(module, swap)


class SyncBatchNormPlugin(LayerSync):
    """Lightning plugin: ``pl.Trainer(plugins=[SyncBatchNormPlugin()])``.

    The CPU-capable counterpart of ``sync_batchnorm=True`` (which converts to
    ``torch.nn.SyncBatchNorm`` and therefore fails on CPU processes).
    """

    def apply(self, model: nn.Module) -> nn.Module:
        return convert_sync_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        return revert_sync_batchnorm(model)


class SplitBatchNorm(nn.BatchNorm2d):
    """Batch norm over ``num_splits`` sub-batches, to simulate multi-GPU training on one device.

    With batch norm, a model trained on k GPUs normalizes each GPU's share of the batch
    with that share's statistics. MoCo (He et al. 2020, "Momentum Contrast for
    Unsupervised Visual Representation Learning", https://arxiv.org/abs/1911.05722) relies
    on this: it shuffles the batch across GPUs so that the batch statistics cannot leak
    which key belongs to which query. This layer reproduces the k-GPU behaviour on one
    device, as in cifar10-fast (https://github.com/davidcpage/cifar10-fast) and
    LightlySSL.

    Sample ``i`` belongs to split ``i % num_splits``. The batch is viewed as
    (B / num_splits, num_splits * C, H, W), so one ``batch_norm`` call normalizes every
    split with its own statistics and updates its own running statistics (split ``k`` in
    ``running_mean[k * C:(k + 1) * C]``). Switching from training to evaluation
    (``.eval()`` / ``.train(False)``) replaces every split's running statistics by their
    mean over the splits; evaluation then uses them like ``BatchNorm2d``.

    Same buffers (running statistics of length ``num_splits * C``) and parameters (length
    ``C``) as LightlySSL 1.6's class, so checkpoints load either way. Differences: with
    ``momentum=None`` the running statistics are a cumulative average as in
    ``BatchNorm2d`` (LightlySSL leaves them unchanged), ``num_batches_tracked`` counts the
    training batches, ``affine=False`` works, and ``track_running_stats=False`` keeps no
    running statistics (as in ``BatchNorm2d``).

    Args:
        num_features: Number of channels C.
        num_splits: Number of simulated devices, >= 1; the batch size must be a multiple.
        **kw: Further ``BatchNorm2d`` arguments (``eps``, ``momentum``, ``affine``,
            ``track_running_stats``, ``device``, ``dtype``).

    Shapes:
        (B, C, H, W) -> (B, C, H, W).

    Example:
        >>> bn = SplitBatchNorm(4, num_splits=2)
        >>> bn(torch.randn(6, 4, 3, 3)).shape
        torch.Size([6, 4, 3, 3])
    """

    def __init__(self, num_features: int, num_splits: int, **kw: Any) -> None:
        if num_splits < 1:
            raise ValueError(f"SplitBatchNorm: 'num_splits' must be >= 1, got {num_splits}.")
        super().__init__(num_features, **kw)
        self.num_splits = num_splits
        if self.running_mean is not None and self.running_var is not None:
            self.running_mean = self.running_mean.repeat(num_splits)
            self.running_var = self.running_var.repeat(num_splits)

    def train(self, mode: bool = True) -> SplitBatchNorm:
        """Sets the mode; leaving training averages the running statistics over the splits."""
        if self.training and not mode:
            with torch.no_grad():
                for stats in (self.running_mean, self.running_var):
                    if stats is not None:
                        mean = stats.view(self.num_splits, -1).mean(dim=0)
                        stats.copy_(mean.repeat(self.num_splits))
        super().train(mode)
        return self

    def forward(self, input: Tensor) -> Tensor:
        """Normalizes (B, C, H, W) per split in training, with running statistics otherwise."""
        if input.dim() != 4:
            raise ValueError(
                f"SplitBatchNorm: expected a 4-D input (B, C, H, W), got {input.dim()}-D."
            )
        n, c, h, w = input.shape
        if not self.training and self.track_running_stats:
            # Every split holds the same (averaged) statistics after train(False).
            assert self.running_mean is not None and self.running_var is not None
            return nn.functional.batch_norm(
                input,
                self.running_mean[:c],
                self.running_var[:c],
                self.weight,
                self.bias,
                training=False,
                eps=self.eps,
            )
        if n % self.num_splits:
            raise ValueError(
                f"SplitBatchNorm: the batch size ({n}) must be a multiple of 'num_splits' "
                f"({self.num_splits})."
            )
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        splits = self.num_splits
        weight = None if self.weight is None else self.weight.repeat(splits)
        bias = None if self.bias is None else self.bias.repeat(splits)
        out = nn.functional.batch_norm(
            input.reshape(n // splits, splits * c, h, w),
            self.running_mean,
            self.running_var,
            weight,
            bias,
            training=True,
            momentum=momentum,
            eps=self.eps,
        )
        return out.reshape(n, c, h, w)


def get_norm_layer(num_features: int, num_splits: int, **kw: Any) -> nn.Module:
    """A :class:`SplitBatchNorm` if ``num_splits > 0``, else a ``BatchNorm2d``.

    Args:
        num_features: Number of channels.
        num_splits: Simulated devices; 0 for plain batch norm.
        **kw: Further ``BatchNorm2d`` arguments, passed on (LightlySSL 1.6 drops them).

    Returns:
        The normalization layer.

    Example:
        >>> type(get_norm_layer(8, num_splits=0)).__name__
        'BatchNorm2d'
    """
    if num_splits > 0:
        return SplitBatchNorm(num_features, num_splits, **kw)
    return nn.BatchNorm2d(num_features, **kw)


__all__ = [
    "SplitBatchNorm",
    "SyncBatchNorm",
    "SyncBatchNormPlugin",
    "convert_sync_batchnorm",
    "get_norm_layer",
    "revert_sync_batchnorm",
]
