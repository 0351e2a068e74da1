"""Distance between predicted and observed latent (frame) embeddings, with LightlySSL 1.6's
interface.

Next-embedding predictors such as LeWM (LeWorldModel, 2026, https://arxiv.org/abs/2603.19312)
regress a predicted embedding onto an observed one. Methods differ only in the norm and in
whether both sides are layer-normalised first, so the comparison is one shared function.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

#: The values of ``latent_distance(distance=...)``.
DISTANCES = ("l1", "l2")


def latent_distance(
    *,
    predicted: Tensor,
    target: Tensor,
    distance: str = "l2",
    normalize: bool = False,
) -> Tensor:
    """Mean absolute (``"l1"``) or squared (``"l2"``) error between two sets of embeddings.

    The target is detached: gradients reach only ``predicted`` (the predictor and the
    encoder path that produced it), the usual stop-gradient on the prediction target.

    Args:
        predicted: Predicted embeddings of shape (B, T, D) (any shape works).
        target: Target embeddings, same shape as ``predicted``.
        distance: ``"l1"`` (mean absolute error) or ``"l2"`` (mean squared error, LeWM).
        normalize: Layer-normalise both tensors over the last dimension (no affine
            parameters) first. This removes the scale of the embeddings from the loss;
            without it an L1 loss can be lowered by shrinking the predictions.

    Returns:
        Scalar distance.

    Raises:
        ValueError: If ``distance`` is unknown or the shapes differ.

    Example:
        >>> import torch
        >>> latent_distance(predicted=torch.zeros(2, 3, 4), target=torch.ones(2, 3, 4)).item()
        1.0
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}.")
    if predicted.shape != target.shape:
        raise ValueError(
            f"predicted and target must have the same shape, got {tuple(predicted.shape)} "
            f"and {tuple(target.shape)}."
        )
    target = target.detach()
    if normalize:
        shape = predicted.shape[-1:]
        predicted, target = F.layer_norm(predicted, shape), F.layer_norm(target, shape)
    if distance == "l1":
        return F.l1_loss(predicted, target)
    return F.mse_loss(predicted, target)
