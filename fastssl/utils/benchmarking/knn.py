"""Weighted k-nearest-neighbour prediction (LightlySSL's ``lightly.utils.benchmarking.knn``).

The protocol of InstDisc (Wu et al. 2018, "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination"), used by most SSL papers to monitor
representations: each query votes with its ``k`` most cosine-similar training samples,
weighted by ``exp(similarity / t)``; defaults k=200, t=0.1. :mod:`fastssl.eval.knn` builds
the accuracy of ``fastssl eval knn`` on it.

Example:
    >>> import torch
    >>> bank = torch.nn.functional.normalize(torch.randn(100, 16), dim=1)
    >>> labels = torch.randint(0, 10, (100,))
    >>> pred = knn_predict(bank[:4], bank.T, labels, num_classes=10, knn_k=5)
    >>> pred.shape
    torch.Size([4, 10])
"""

from __future__ import annotations

import torch
from torch import Tensor


def knn_predict(
    feature: Tensor,
    feature_bank: Tensor,
    feature_labels: Tensor,
    num_classes: int,
    knn_k: int = 200,
    knn_t: float = 0.1,
) -> Tensor:
    """Ranks the classes for each query by weighted kNN vote (LightlySSL's signature).

    Args:
        feature: Queries of shape (B, D), L2-normalised for cosine similarity.
        feature_bank: Database of shape (D, N), L2-normalised along D.
        feature_labels: Integer labels of shape (N,).
        num_classes: Number of classes C.
        knn_k: Neighbours that vote; clamped to N when the bank is smaller (LightlySSL
            1.6 raises in that case).
        knn_t: Temperature of the vote weights ``exp(sim / knn_t)``.

    Returns:
        Class indices of shape (B, C), most probable first: ``[:, 0]`` is the top-1
        prediction.
    """
    if knn_k < 1:
        raise ValueError(f"knn_k must be >= 1, got {knn_k}")
    if knn_t <= 0:
        raise ValueError(f"knn_t must be > 0, got {knn_t}")
    if feature_bank.shape[1] != feature_labels.shape[0]:
        raise ValueError(
            f"feature_bank has {feature_bank.shape[1]} samples (shape (D, N)) but "
            f"feature_labels has {feature_labels.shape[0]}"
        )
    k = min(knn_k, feature_bank.shape[1])
    similarity = feature @ feature_bank  # (B, N)
    top_sim, top_idx = similarity.topk(k, dim=1)  # (B, k)
    top_labels = feature_labels[top_idx]  # (B, k)
    weights = (top_sim / knn_t).exp()
    scores = torch.zeros(feature.shape[0], num_classes, device=feature.device, dtype=weights.dtype)
    scores.scatter_add_(1, top_labels, weights)
    return scores.argsort(dim=1, descending=True)
