"""Weighted k-nearest-neighbour classification of embeddings: the score of ``fastssl eval knn``.

:func:`knn_accuracy` scores a whole test set with the InstDisc vote (Wu et al. 2018),
:func:`knn_predict`, whose home is :mod:`fastssl.utils.benchmarking.knn` (LightlySSL's
path, below this package); it is re-exported here.

Example:
    >>> import torch
    >>> features, labels = torch.randn(100, 16), torch.randint(0, 10, (100,))
    >>> 0.0 <= knn_accuracy(features, labels, features[:8], labels[:8], num_classes=10) <= 1.0
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastssl.utils.benchmarking.knn import knn_predict

__all__ = ["knn_accuracy", "knn_predict"]


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
