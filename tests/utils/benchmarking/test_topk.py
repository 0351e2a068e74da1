from __future__ import annotations

import pytest
import torch
from lightly.utils.benchmarking.topk import mean_topk_accuracy as lightly_mean_topk_accuracy

from fastssl.utils.benchmarking.topk import mean_topk_accuracy


@pytest.mark.parametrize(("batch", "classes"), [(1, 3), (8, 5), (64, 10)])
@pytest.mark.parametrize("k", [(1,), (1, 5), (2, 3, 10), (1, 20)])
def test_matches_lightly(batch: int, classes: int, k: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(batch * classes)
    ranked = torch.randn(batch, classes, generator=g).argsort(dim=1, descending=True)
    targets = torch.randint(0, classes, (batch,), generator=g)
    ours = mean_topk_accuracy(ranked, targets, k)
    theirs = lightly_mean_topk_accuracy(ranked, targets, k)
    assert list(ours) == list(theirs) == list(k)
    for key in k:
        assert ours[key].shape == () and ours[key].dtype == torch.float32
        torch.testing.assert_close(ours[key], theirs[key])


def test_values_and_truncated_predictions() -> None:
    # Only the 2 best classes are given (e.g. knn_predict(...)[:, :2]).
    ranked = torch.tensor([[3, 1], [0, 2], [1, 0], [2, 3]])
    targets = torch.tensor([3, 2, 2, 3])
    acc = mean_topk_accuracy(ranked, targets, k=(1, 2, 5))
    assert {k: v.item() for k, v in acc.items()} == {1: 0.25, 2: 0.75, 5: 0.75}


def test_no_gradient() -> None:
    ranked = torch.tensor([[0, 1]])
    acc = mean_topk_accuracy(ranked, torch.tensor([0]), k=(1,))
    assert not acc[1].requires_grad and acc[1].item() == 1.0
