import pytest
import torch
from lightly.utils.benchmarking import knn_predict as lightly_knn_predict

from fastssl.eval import knn_accuracy, knn_predict


def _naive_top1(
    query: torch.Tensor, bank: torch.Tensor, labels: torch.Tensor, c: int, k: int, t: float
) -> list[int]:
    out = []
    for q in query:
        sims = [(float(q @ bank[:, j]), int(labels[j])) for j in range(bank.shape[1])]
        sims.sort(key=lambda s: -s[0])
        votes = [0.0] * c
        for s, label in sims[:k]:
            votes[label] += float(torch.tensor(s / t).exp())
        out.append(max(range(c), key=lambda i: votes[i]))
    return out


def _data(seed: int, n: int = 60, b: int = 7, d: int = 8, c: int = 4):
    g = torch.Generator().manual_seed(seed)
    bank = torch.nn.functional.normalize(torch.randn(d, n, generator=g), dim=0)
    query = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1)
    labels = torch.randint(0, c, (n,), generator=g)
    return query, bank, labels, c


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("k", "t"), [(1, 0.1), (5, 0.1), (20, 0.5)])
def test_knn_predict_matches_lightly_and_naive(seed: int, k: int, t: float) -> None:
    query, bank, labels, c = _data(seed)
    ours = knn_predict(query, bank, labels, c, knn_k=k, knn_t=t)
    assert ours.shape == (query.shape[0], c)
    assert torch.equal(ours[:, 0], lightly_knn_predict(query, bank, labels, c, k, t)[:, 0])
    assert ours[:, 0].tolist() == _naive_top1(query, bank, labels, c, k, t)


def test_k_larger_than_bank_is_clamped() -> None:
    query, bank, labels, c = _data(0, n=5)
    assert knn_predict(query, bank, labels, c, knn_k=200)[:, 0].tolist() == _naive_top1(
        query, bank, labels, c, 5, 0.1
    )


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"knn_k": 0}, "knn_k"), ({"knn_t": 0.0}, "knn_t")]
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    query, bank, labels, c = _data(0)
    with pytest.raises(ValueError, match=message):
        knn_predict(query, bank, labels, c, **kwargs)


def test_knn_accuracy_on_separable_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    centers = torch.eye(3) * 10
    train_y = torch.arange(3).repeat(20)
    test_y = torch.arange(3).repeat(5)
    train_x = centers[train_y] + torch.randn(60, 3, generator=g)
    test_x = centers[test_y] + torch.randn(15, 3, generator=g)
    assert knn_accuracy(train_x, train_y, test_x, test_y, 3, knn_k=10, batch_size=4) == 1.0
    # Shuffled labels in the bank: accuracy falls to chance level.
    perm = torch.randperm(60, generator=g)
    assert knn_accuracy(train_x, train_y[perm], test_x, test_y, 3, knn_k=10) < 0.7
