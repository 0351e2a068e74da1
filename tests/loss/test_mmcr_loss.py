from __future__ import annotations

import inspect

import pytest
import torch
from lightly.loss import MMCRLoss as LightlyMMCRLoss

from fastssl.loss import MMCRLoss
from fastssl.loss.mmcr_loss import mmcr_loss


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(shape, generator=g).requires_grad_(),
        torch.randn(shape, generator=g).requires_grad_(),
    )


@pytest.mark.parametrize("shape", [(2, 1, 3), (8, 2, 16), (20, 4, 5), (3, 3, 32)])
@pytest.mark.parametrize("lmda", [5e-3, 0.0, 1.0])
def test_matches_lightly(shape: tuple[int, int, int], lmda: float) -> None:
    online, momentum = _pair(shape, seed=sum(shape))
    ours = MMCRLoss(lmda)(online, momentum)
    theirs = LightlyMMCRLoss(lmda)(online, momentum)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    for a, b in zip(
        torch.autograd.grad(ours, (online, momentum)),
        torch.autograd.grad(theirs, (online, momentum)),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_matches_formula_with_eigenvalues() -> None:
    # ||A||_* = sum sqrt(eig(A^T A)), image by image, in float64.
    online, momentum = (x.detach().double() for x in _pair((5, 2, 4), seed=2))

    def nuclear(a: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvalsh(a.T @ a).clamp(min=0).sqrt().sum()

    z = torch.cat([online, momentum], dim=1)
    expected = -nuclear(z.mean(1)) + 0.1 * sum(nuclear(z[i]) for i in range(5)) / 5
    torch.testing.assert_close(mmcr_loss(online, momentum, 0.1), expected)


def test_identical_views_are_single_points() -> None:
    # All views of an image equal: each z_i is rank one, ||z_i||_* = sqrt(2k) ||c_i||.
    c = torch.randn(4, 6)
    online = c.unsqueeze(1).repeat(1, 2, 1)
    per_image = 2 * torch.linalg.vector_norm(c, dim=1).sum()  # sqrt(2k) = 2 for k = 2
    expected = -torch.linalg.matrix_norm(c, ord="nuc") + 0.5 * per_image / 4
    torch.testing.assert_close(mmcr_loss(online, online, 0.5), expected, rtol=1e-5, atol=1e-5)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"lmda must be greater than or equal to 0, got lmda=-1"):
        MMCRLoss(lmda=-1)
    with pytest.raises(ValueError, match=r"online and momentum .* got \(2, 2, 3\) and \(2, 2, 4\)"):
        MMCRLoss()(torch.randn(2, 2, 3), torch.randn(2, 2, 4))
    with pytest.raises(ValueError, match=r"\(batch_size, k, embedding_size\)"):
        MMCRLoss()(torch.randn(2, 3), torch.randn(2, 3))


def test_same_arguments_as_lightly() -> None:
    for method in ("__init__", "forward"):
        mine = inspect.signature(getattr(MMCRLoss, method)).parameters
        peer = inspect.signature(getattr(LightlyMMCRLoss, method)).parameters
        assert list(mine)[: len(peer)] == list(peer)
        assert [mine[name].default for name in peer] == [p.default for p in peer.values()]
