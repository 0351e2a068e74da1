"""LeWM tests. SIGReg draws its directions like LightlySSL 1.6 (see test_lejepa_loss.py), so
both sides are seeded identically and compared value by value."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from lightly.loss import LeWMLoss as LightlyLeWMLoss
from lightly.loss.lewm_loss import latent_prediction_loss as lightly_latent_prediction_loss
from torch import nn

from fastssl.loss.lejepa_loss import SIGReg
from fastssl.loss.lewm_loss import LeWMLoss, latent_prediction_loss
from fastssl.utils import dist
from tests._distributed import run_distributed
from tests.loss._ddp import assert_ddp_matches_full_batch, ddp_worker, run_steps


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).requires_grad_()


@pytest.mark.parametrize("normalize", [False, True])
def test_latent_prediction_loss_matches_lightly(normalize: bool) -> None:
    predicted, target = _randn(3, 4, 5, seed=1), _randn(3, 4, 5, seed=2)
    ours = latent_prediction_loss(predicted=predicted, target=target, normalize=normalize)
    theirs = lightly_latent_prediction_loss(predicted=predicted, target=target, normalize=normalize)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        torch.autograd.grad(ours, predicted)[0], torch.autograd.grad(theirs, predicted)[0]
    )
    if not normalize:
        torch.testing.assert_close(ours, ((predicted - target) ** 2).mean())


@pytest.mark.parametrize(("batch", "frames", "dim"), [(8, 5, 6), (4, 2, 3), (16, 1, 8)])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"sigreg_num_vectors": 16},
        {"lambda_param": 0.7, "normalize": True, "sigreg_knots": 5, "sigreg_t_max": 2.0},
        {"lambda_param": 0.0, "sigreg_num_vectors": 2},
    ],
)
def test_matches_lightly(batch: int, frames: int, dim: int, kwargs: dict) -> None:
    embeddings = _randn(batch, frames, dim, seed=frames)
    steps = max(frames - 1, 1)
    predicted = (embeddings[:, :steps] * 0.8 + 0.1).detach().requires_grad_()
    target = embeddings[:, -steps:]
    call = {"predicted": predicted, "target": target, "embeddings": embeddings}
    torch.manual_seed(4)
    ours = LeWMLoss(**kwargs)(**call)
    torch.manual_seed(4)
    theirs = LightlyLeWMLoss(**kwargs)(**call)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    inputs = (predicted, embeddings)
    for a, b in zip(
        torch.autograd.grad(ours, inputs), torch.autograd.grad(theirs, inputs), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_sigreg_samples_are_the_batch() -> None:
    """The regulariser tests the distribution over the batch (per frame), not over time."""
    embeddings = _randn(32, 3, 4, seed=5).detach()
    perfect = embeddings[:, 1:]
    torch.manual_seed(6)
    loss = LeWMLoss(lambda_param=2.0, sigreg_num_vectors=8)(
        predicted=perfect, target=perfect, embeddings=embeddings
    )
    torch.manual_seed(6)
    over_batch = SIGReg(num_vectors=8)(embeddings.transpose(0, 1))
    torch.manual_seed(6)
    over_time = SIGReg(num_vectors=8)(embeddings)
    torch.testing.assert_close(loss, 2.0 * over_batch)
    assert not torch.allclose(loss, 2.0 * over_time, rtol=1e-2)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(
        ValueError, match="'lambda_param' must not be negative, got lambda_param=-1"
    ):
        LeWMLoss(lambda_param=-1)
    with pytest.raises(ValueError, match="'num_vectors' must be a positive integer"):
        LeWMLoss(sigreg_num_vectors=0)
    loss_fn = LeWMLoss(sigreg_num_vectors=4)
    emb = torch.zeros(2, 3, 4)
    with pytest.raises(
        ValueError, match=re.escape("embeddings must have shape (B, T, D), got (2, 4)")
    ):
        loss_fn(predicted=emb, target=emb, embeddings=emb[:, 0])
    with pytest.raises(ValueError, match=re.escape("got (3, 3, 4) and (2, 3, 4)")):
        loss_fn(predicted=emb, target=emb, embeddings=torch.zeros(3, 3, 4))
    with pytest.raises(ValueError, match=re.escape("same shape, got (2, 3, 4) and (2, 2, 4)")):
        loss_fn(predicted=emb, target=emb[:, 1:], embeddings=emb)
    with pytest.raises(TypeError):
        loss_fn(emb, emb, emb)  # type: ignore[misc]  # keyword-only, as in LightlySSL


# Distributed: the harness's (z_a, z_b) become a 3-frame clip; the "predictor" is a scaling.
class _LeWMOnPairs(nn.Module):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.loss = LeWMLoss(sigreg_num_vectors=16, **kwargs)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        clip = torch.stack([z_a, z_b, z_a * z_b], dim=1)  # (B, 3, D)
        return self.loss(predicted=0.5 * clip[:, :-1], target=clip[:, 1:], embeddings=clip)


DDP_CASES = [
    {"loss_cls": _LeWMOnPairs, "kwargs": {}, "global_batch": 8, "dim": 5, "steps": 2},
    {
        "loss_cls": _LeWMOnPairs,
        "kwargs": {"lambda_param": 1.0, "normalize": True},
        "global_batch": 4,
        "dim": 3,
        "steps": 1,
    },
]


def _both_options(cases: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """gather_distributed=True (the shared harness) and False on this rank's rows."""
    local = []
    for case in cases:
        n = case["global_batch"] // dist.world_size()
        rows = slice(dist.rank() * n, (dist.rank() + 1) * n)
        kwargs = {**case["kwargs"], "gather_distributed": False}
        local.append(
            run_steps(case["loss_cls"], kwargs, case["global_batch"], case["dim"], 1, rows)
        )
    return ddp_worker(cases), local


@pytest.mark.dist
def test_ddp_gather_distributed_true_and_false() -> None:
    per_rank = run_distributed(_both_options, 2, DDP_CASES)
    for i, case in enumerate(DDP_CASES):
        assert_ddp_matches_full_batch(case, [r[0][i] for r in per_rank])
        n = case["global_batch"] // 2
        kwargs = {**case["kwargs"], "gather_distributed": False}
        for rank, result in enumerate(per_rank):
            rows = slice(rank * n, (rank + 1) * n)
            alone = run_steps(case["loss_cls"], kwargs, case["global_batch"], case["dim"], 1, rows)
            torch.testing.assert_close(result[1][i]["losses"], alone["losses"])
            torch.testing.assert_close(result[1][i]["grads"], alone["grads"])
