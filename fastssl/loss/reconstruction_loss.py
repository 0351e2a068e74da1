"""Masked-patch reconstruction loss of masked image modelling (MAE, SimMIM, AIM).

- MAE: He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners",
  https://arxiv.org/abs/2111.06377 (mean squared error on the masked patches, optionally
  against per-patch normalised pixels, ``norm_pix_loss``).
- SimMIM: Xie et al. 2022, "SimMIM: A Simple Framework for Masked Image Modeling",
  https://arxiv.org/abs/2111.09886 (L1 error on the masked patches).
- AIM: El-Nouby et al. 2024, "Scalable Pre-training of Large Autoregressive Image Models",
  https://arxiv.org/abs/2401.08541 (mean squared error on normalised patches, every patch
  predicted: ``mask=None``).

LightlySSL 1.6 has no class for this (its examples call ``nn.MSELoss`` on the selected
patches); this module gives the three recipes one tested implementation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

_LOSSES = ("mse", "l1")


def normalize_patches(target: Tensor, eps: float = 1e-6) -> Tensor:
    """Normalises every patch to zero mean and unit variance (MAE's ``norm_pix_loss``).

    Uses the unbiased variance over the patch, as the MAE reference code does.

    Args:
        target: Tensor of shape (..., P): patches of P values.
        eps: Added to the variance before the square root.

    Returns:
        Tensor of the same shape: ``(target - mean) / sqrt(var + eps)`` per patch.

    Example:
        >>> normalize_patches(torch.tensor([[1.0, 3.0]]))
        tensor([[-0.7071,  0.7071]])
    """
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True, correction=1)
    return (target - mean) / torch.sqrt(var + eps)


class MaskedReconstructionLoss(nn.Module):
    """Reconstruction error averaged over the masked patches (MAE, SimMIM, AIM).

    The error of a patch is the mean over its P values of ``(pred - target) ** 2`` (``"mse"``)
    or ``|pred - target|`` (``"l1"``). With a mask, the loss is the mask-weighted mean of the
    patch errors, ``sum_{b,n} m[b,n] e[b,n] / sum_{b,n} m[b,n]`` (MAE's convention: 1 marks a
    masked patch, the ones to reconstruct); without, the mean over all patches. For a boolean
    mask this equals ``nn.MSELoss()(pred[mask], target[mask])``. An all-zero mask gives 0,
    not NaN.

    Attributes:
        loss: ``"mse"`` or ``"l1"``.
        norm_pix_loss: If True, each target patch is normalised to zero mean and unit
            (unbiased) variance first.

    Example:
        >>> loss_fn = MaskedReconstructionLoss(loss="mse", norm_pix_loss=True)
        >>> pred, target = torch.randn(2, 16, 48), torch.randn(2, 16, 48)  # (B, N, P)
        >>> mask = torch.rand(2, 16) < 0.75  # True: masked, to be reconstructed
        >>> loss = loss_fn(pred, target, mask)
        >>> loss.shape
        torch.Size([])
    """

    def __init__(self, loss: str = "mse", norm_pix_loss: bool = False) -> None:
        """Stores the options.

        Args:
            loss: ``"mse"`` or ``"l1"``.
            norm_pix_loss: Whether to normalise each target patch (MAE).

        Raises:
            ValueError: If ``loss`` is not one of the supported names.
        """
        super().__init__()
        if loss not in _LOSSES:
            raise ValueError(
                f"MaskedReconstructionLoss 'loss' must be one of {list(_LOSSES)}, got {loss!r}."
            )
        self.loss = loss
        self.norm_pix_loss = norm_pix_loss

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """Computes the loss.

        Args:
            pred: Predicted patches, shape (B, N, P).
            target: Target patches, shape (B, N, P); no gradient is expected through it.
            mask: Optional (B, N) bool or float tensor; 1/True marks the patches to average
                over. None averages over all patches.

        Returns:
            Scalar loss.

        Raises:
            ValueError: If the shapes do not match.
        """
        if pred.shape != target.shape:
            raise ValueError(
                f"MaskedReconstructionLoss expects pred and target of the same shape, got "
                f"pred {tuple(pred.shape)} and target {tuple(target.shape)}."
            )
        if self.norm_pix_loss:
            target = normalize_patches(target)
        diff = pred - target
        error = diff.square() if self.loss == "mse" else diff.abs()
        if mask is None:
            return error.mean()
        if mask.shape != pred.shape[:-1]:
            raise ValueError(
                f"MaskedReconstructionLoss expects a mask of shape {tuple(pred.shape[:-1])} "
                f"(pred without its last dimension), got {tuple(mask.shape)}."
            )
        weights = mask.to(error.dtype)
        patch_error = error.mean(dim=-1)
        # A tiny floor only matters when the mask is empty: 0 / tiny = 0 instead of NaN.
        total_weight = weights.sum().clamp_min(torch.finfo(error.dtype).tiny)
        return torch.sum(patch_error * weights) / total_weight
