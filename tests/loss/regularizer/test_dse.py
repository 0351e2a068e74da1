from __future__ import annotations

import inspect
import math
from typing import Any

import pytest
import torch
from lightly.loss.regularizer import DSERegularizer as LightlyDSERegularizer
from torch.nn import functional as F

from fastssl.loss.regularizer import DSERegularizer
from fastssl.loss.regularizer.dse import cluster_singular_sums, kmeans


def _reps(shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).requires_grad_()


CASES: list[tuple[tuple[int, int, int], dict[str, Any]]] = [
    ((4, 16, 8), {}),
    ((3, 10, 5), {"local_clusters": 2, "global_clusters": 5}),
    ((5, 7, 12), {"normalize": False, "global_clusters": 4, "local_clusters": 4}),
    ((2, 1, 3), {}),  # one token per image: no cluster has two points
    ((1, 30, 4), {"global_clusters": 3, "max_kmeans_iters": 2}),
    ((6, 12, 16), {"weight": 0.3, "tol": 1e-2}),
    ((3, 8, 2), {"local_clusters": 8, "global_clusters": 40}),  # more clusters than points
]


@pytest.mark.parametrize(("shape", "kwargs"), CASES)
def test_matches_lightly_under_the_same_seed(
    shape: tuple[int, int, int], kwargs: dict[str, Any]
) -> None:
    x = _reps(shape, seed=sum(shape))
    torch.manual_seed(0)  # k-means++ and empty-cluster draws, in LightlySSL's order
    ours = DSERegularizer(**kwargs)(x)
    torch.manual_seed(0)
    theirs = LightlyDSERegularizer(**kwargs)(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        torch.autograd.grad(ours, x)[0], torch.autograd.grad(theirs, x)[0], rtol=1e-4, atol=1e-6
    )


def test_zero_weight_gives_zero_without_drawing() -> None:
    x = _reps((2, 4, 3))
    state = torch.random.get_rng_state()
    assert DSERegularizer(weight=0.0)(x).item() == 0.0
    assert torch.equal(torch.random.get_rng_state(), state)


def test_cluster_singular_sums_match_per_cluster_svd() -> None:
    points = torch.randn(20, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0] * 2 + [1] * 9 + [2] * 1 + [3] * 8)[torch.randperm(20)]
    values, defined = cluster_singular_sums(points, labels, num_clusters=5)
    assert defined.tolist() == [True, True, False, True, False]
    expected = []
    for c in (0, 1, 3):
        cluster = points[labels == c]
        centred = cluster - cluster.mean(0)
        scale = math.sqrt(max(cluster.shape[0] - 1, 3))
        expected.append(torch.linalg.svdvals(centred).sum() / scale)
    torch.testing.assert_close(values[defined], torch.stack(expected))
    weights = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(
        torch.autograd.grad((values[defined] * weights).sum(), points)[0],
        torch.autograd.grad((torch.stack(expected) * weights).sum(), points)[0],
    )


def test_kmeans_finds_separated_blobs() -> None:
    torch.manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = (centres.repeat_interleave(10, 0) + 0.1 * torch.randn(30, 2))[torch.randperm(30)]
    found, labels = kmeans(x, 3)
    assert found.shape == (3, 2)
    for c in range(3):  # every blob is one cluster, centred on the blob
        members = x[labels == c]
        assert members.shape[0] == 10
        assert (members - members.mean(0)).abs().max() < 1.0
        torch.testing.assert_close(found[c], members.mean(0))


def test_structure_scores_clustered_above_random() -> None:
    # Patches in a few tight, far-apart clusters per image have more dense structure than
    # isotropic noise: a lower (more negative) regulariser value.
    torch.manual_seed(2)
    centres = F.normalize(torch.randn(4, 3, 16), dim=-1).repeat_interleave(8, dim=1)
    clustered = centres + 0.01 * torch.randn(4, 24, 16)
    noise = torch.randn(4, 24, 16)
    reg = DSERegularizer(global_clusters=12)
    assert reg(clustered) < reg(noise)


def test_rejects_bad_arguments() -> None:
    for kwargs, message in [
        ({"weight": -1.0}, r"weight must be >= 0, got -1.0"),
        ({"local_clusters": 0}, r"local_clusters must be >= 1, got 0"),
        ({"global_clusters": 0}, r"global_clusters must be >= 1, got 0"),
        ({"max_kmeans_iters": 0}, r"max_kmeans_iters must be >= 1, got 0"),
        ({"tol": 0.0}, r"tol must be > 0, got 0.0"),
    ]:
        with pytest.raises(ValueError, match=message):
            DSERegularizer(**kwargs)
    with pytest.raises(ValueError, match=r"\(batch_size, num_tokens, dim\), got \(4, 3\)"):
        DSERegularizer()(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"non-empty .* got \(2, 0, 3\)"):
        DSERegularizer()(torch.randn(2, 0, 3))


def test_same_arguments_as_lightly() -> None:
    for method in ("__init__", "forward"):
        mine = inspect.signature(getattr(DSERegularizer, method)).parameters
        peer = inspect.signature(getattr(LightlyDSERegularizer, method)).parameters
        assert list(mine)[: len(peer)] == list(peer)
        assert [mine[name].default for name in peer] == [p.default for p in peer.values()]
