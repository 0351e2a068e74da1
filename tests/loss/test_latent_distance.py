from __future__ import annotations

import re

import pytest
import torch
from lightly.loss.latent_distance import DISTANCES as LIGHTLY_DISTANCES
from lightly.loss.latent_distance import latent_distance as lightly_latent_distance

from fastssl.loss.latent_distance import DISTANCES, latent_distance


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(shape, generator=g).requires_grad_(),
        (3 * torch.randn(shape, generator=g) + 1).requires_grad_(),
    )


@pytest.mark.parametrize("shape", [(2, 3, 4), (5, 1, 8), (3, 7)])
@pytest.mark.parametrize("distance", ["l1", "l2"])
@pytest.mark.parametrize("normalize", [False, True])
def test_matches_lightly(shape: tuple[int, ...], distance: str, normalize: bool) -> None:
    predicted, target = _pair(shape)
    kwargs = {"distance": distance, "normalize": normalize}
    ours = latent_distance(predicted=predicted, target=target, **kwargs)
    theirs = lightly_latent_distance(predicted=predicted, target=target, **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    ours_grad, target_grad = torch.autograd.grad(ours, (predicted, target), allow_unused=True)
    (theirs_grad,) = torch.autograd.grad(theirs, predicted)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-4, atol=1e-6)
    assert target_grad is None  # the target is detached


def test_formulas() -> None:
    predicted, target = _pair((2, 3, 4), seed=1)
    p, t = predicted.detach(), target.detach()
    torch.testing.assert_close(
        latent_distance(predicted=p, target=t, distance="l1"), (p - t).abs().mean()
    )
    torch.testing.assert_close(latent_distance(predicted=p, target=t), ((p - t) ** 2).mean())

    def layer_norm(x: torch.Tensor) -> torch.Tensor:
        mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5)

    torch.testing.assert_close(
        latent_distance(predicted=p, target=t, normalize=True),
        ((layer_norm(p) - layer_norm(t)) ** 2).mean(),
    )
    # Normalising removes the scale: scaling both sides changes nothing.
    torch.testing.assert_close(
        latent_distance(predicted=5 * p, target=5 * t, distance="l1", normalize=True),
        latent_distance(predicted=p, target=t, distance="l1", normalize=True),
    )


def test_constants_and_keyword_only() -> None:
    assert DISTANCES == LIGHTLY_DISTANCES
    with pytest.raises(TypeError):
        latent_distance(torch.zeros(1), torch.zeros(1))  # type: ignore[misc]


def test_rejects_bad_arguments() -> None:
    with pytest.raises(
        ValueError, match=re.escape("distance must be one of ('l1', 'l2'), got 'cos'")
    ):
        latent_distance(predicted=torch.zeros(2, 3), target=torch.zeros(2, 3), distance="cos")
    with pytest.raises(ValueError, match=re.escape("same shape, got (2, 3) and (2, 4)")):
        latent_distance(predicted=torch.zeros(2, 3), target=torch.zeros(2, 4))
