"""Top-k accuracy of ranked class predictions (LightlySSL's
``lightly.utils.benchmarking.topk``).

Example:
    >>> import torch
    >>> ranked = torch.tensor([[0, 1, 2], [2, 0, 1]])  # classes, most confident first
    >>> acc = mean_topk_accuracy(ranked, torch.tensor([1, 2]), k=(1, 2))
    >>> {k: float(v) for k, v in acc.items()}
    {1: 0.5, 2: 1.0}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


@torch.no_grad()
def mean_topk_accuracy(
    predicted_classes: Tensor, targets: Tensor, k: Sequence[int]
) -> dict[int, Tensor]:
    """Fraction of samples whose target is among their first ``k`` predicted classes.

    Args:
        predicted_classes: Class indices of shape (B, C') sorted by decreasing confidence,
            e.g. ``logits.topk(C').indices`` or the output of ``knn_predict``. A ``k``
            larger than C' counts all C' predictions.
        targets: Target classes of shape (B,).
        k: The values of k to score.

    Returns:
        ``{k: accuracy}`` for every requested k, each a scalar float tensor in [0, 1]
        (averaged over the batch), e.g. ``{1: tensor(0.4), 5: tensor(0.6)}``.
    """
    hits = predicted_classes == targets.unsqueeze(1)  # (B, C'); one True at most per row
    return {num_k: hits[:, :num_k].any(dim=1).float().mean() for num_k in k}
