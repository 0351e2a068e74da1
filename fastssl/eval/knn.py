"""Weighted k-nearest-neighbour classification of embeddings.

The protocol of InstDisc (Wu et al. 2018, "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination"), used by most SSL papers to monitor
representations: each query votes with its ``k`` most cosine-similar training samples,
weighted by ``exp(similarity / t)``; defaults k=200, t=0.1.

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


@torch.no_grad()
def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    knn_k: int = 200,
    knn_t: float = 0.1,
    batch_size: int = 1024,
) -> float:
    """Top-1 accuracy of weighted kNN, with features L2-normalised here.

    Args:
        train_features: Bank features of shape (N, D).
        train_labels: Bank labels of shape (N,).
        test_features: Query features of shape (M, D).
        test_labels: Query labels of shape (M,).
        num_classes: Number of classes C.
        knn_k: Neighbours that vote.
        knn_t: Temperature of the vote weights.
        batch_size: Queries per step; bounds memory to batch_size x N similarities.

    Returns:
        The fraction of queries whose top-1 class equals their label.
    """
    if len(test_features) == 0:
        raise ValueError("test_features is empty: nothing to evaluate")
    bank = torch.nn.functional.normalize(train_features.float(), dim=1).T.contiguous()
    queries = torch.nn.functional.normalize(test_features.float(), dim=1)
    correct = 0
    for start in range(0, len(queries), batch_size):
        pred = knn_predict(
            queries[start : start + batch_size], bank, train_labels, num_classes, knn_k, knn_t
        )
        correct += int((pred[:, 0] == test_labels[start : start + batch_size]).sum())
    return correct / len(queries)
