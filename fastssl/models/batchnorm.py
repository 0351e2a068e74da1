"""Synchronized batch normalization that works on every device, the CPU included.

``torch.nn.SyncBatchNorm`` refuses CPU tensors, so DDP runs with ``sync_batchnorm=True``
cannot be tested without GPUs. This module normalizes with the statistics of the global
batch on any device: each process contributes its per-channel count, mean and variance,
gathered *with gradient* through :func:`fastssl.utils.dist.gather_cat`, so the forward
and the backward pass equal batch normalization over the concatenated batch (Ioffe &
Szegedy 2015, "Batch Normalization"; synchronized across devices as in MegDet, Peng et
al. 2018). Outside distributed use it is plain batch normalization.

Example:
    >>> import torchvision
    >>> model = convert_sync_batchnorm(torchvision.models.resnet18())
    >>> # pl.Trainer(plugins=[SyncBatchNormPlugin()]) in place of sync_batchnorm=True
"""

from __future__ import annotations

from collections.abc import Callable

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
        if not isinstance(m, _BatchNorm) or isinstance(m, SyncBatchNorm):
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


__all__ = [
    "SyncBatchNorm",
    "SyncBatchNormPlugin",
    "convert_sync_batchnorm",
    "revert_sync_batchnorm",
]
