from __future__ import annotations

import inspect

import pytest
import torch
from lightly.loss import Whitening2d as LightlyWhitening2d
from lightly.loss import WMSELoss as LightlyWMSELoss
from lightly.loss.wmse_loss import norm_mse_loss as lightly_norm_mse_loss
from torch.nn import functional as F

from fastssl.loss import Whitening2d, WMSELoss
from fastssl.loss.wmse_loss import norm_mse_loss


def _x(rows: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)).requires_grad_()


def _assert_buffers_equal(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    mine, peer = dict(ours.named_buffers()), dict(theirs.named_buffers())
    assert mine.keys() == peer.keys()
    for name, buffer in peer.items():
        assert mine[name].shape == buffer.shape
        torch.testing.assert_close(mine[name], buffer, rtol=1e-5, atol=1e-6)


# (embedding_dim, w_size, num_samples, batch size per view, w_iter, eps)
CASES = [(2, 4, 2, 8, 1, 0.0), (3, 6, 3, 12, 2, 0.1), (4, 8, 2, 8, 3, 0.0), (2, 4, 4, 4, 1, 0.5)]


@pytest.mark.parametrize(("dim", "w_size", "num_samples", "bs", "w_iter", "eps"), CASES)
def test_matches_lightly_over_steps(
    dim: int, w_size: int, num_samples: int, bs: int, w_iter: int, eps: float
) -> None:
    kwargs = {"momentum": 0.1, "eps": eps, "w_iter": w_iter, "w_size": w_size}
    ours = WMSELoss(dim, num_samples=num_samples, **kwargs)
    theirs = LightlyWMSELoss(dim, num_samples=num_samples, **kwargs)
    for step in range(3):
        x = _x(num_samples * bs, dim, seed=step)
        torch.manual_seed(step)  # the same sub-batches: both draw torch.randperm(bs) per iter
        loss = ours(x)
        torch.manual_seed(step)
        expected = theirs(x)
        torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(
            torch.autograd.grad(loss, x)[0],
            torch.autograd.grad(expected, x)[0],
            rtol=1e-4,
            atol=1e-5,
        )
        _assert_buffers_equal(ours, theirs)
    # Eval mode whitens with the running statistics and leaves them unchanged.
    ours.eval()
    theirs.eval()
    x = _x(num_samples * bs, dim, seed=9)
    torch.manual_seed(9)
    loss = ours(x)
    torch.manual_seed(9)
    torch.testing.assert_close(loss, theirs(x), rtol=1e-4, atol=1e-6)
    _assert_buffers_equal(ours, theirs)


@pytest.mark.parametrize("track_running_stats", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_whitening_matches_lightly(track_running_stats: bool, training: bool) -> None:
    ours = Whitening2d(3, momentum=0.2, track_running_stats=track_running_stats, eps=0.05)
    theirs = LightlyWhitening2d(3, momentum=0.2, track_running_stats=track_running_stats, eps=0.05)
    ours.train(training)
    theirs.train(training)
    for step in range(3):
        x = _x(10, 3, seed=step)
        out, expected = ours(x), theirs(x)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(
            torch.autograd.grad(out.square().sum(), x)[0],
            torch.autograd.grad(expected.square().sum(), x)[0],
            rtol=1e-4,
            atol=1e-5,
        )
        _assert_buffers_equal(ours, theirs)


def test_whitened_batch_has_identity_covariance() -> None:
    out = Whitening2d(5)(torch.randn(64, 5) @ torch.randn(5, 5) + 3.0)
    torch.testing.assert_close(out.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.T @ out / 63, torch.eye(5), atol=1e-4, rtol=0)


def test_grouped_whitening_equals_sequential_calls() -> None:
    grouped, sequential = Whitening2d(3, momentum=0.3), Whitening2d(3, momentum=0.3)
    x = torch.randn(4, 9, 3)
    out = grouped.whiten_groups(x)
    for g in range(4):
        torch.testing.assert_close(out[g], sequential(x[g]))
    _assert_buffers_equal(grouped, sequential)


def test_norm_mse_loss() -> None:
    x0, x1 = _x(6, 4, seed=1), _x(6, 4, seed=2)
    expected = ((F.normalize(x0) - F.normalize(x1)) ** 2).sum(dim=1).mean()
    torch.testing.assert_close(norm_mse_loss(x0, x1), expected)
    torch.testing.assert_close(norm_mse_loss(x0, x1), lightly_norm_mse_loss(x0, x1))


def test_custom_loss_fn_sees_views_in_image_order() -> None:
    # Whitening is per sub-batch, but loss_fn gets the views re-ordered by image: with one
    # sub-batch (w_size = batch) the order is the input's, whatever the permutation.
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        seen.append((x0, x1))
        return (x0 - x1).square().sum()

    x = _x(16, 2, seed=3)
    WMSELoss(2, w_size=8, loss_fn=record)(x)
    whitening = Whitening2d(2)
    torch.testing.assert_close(seen[0][0], whitening(x[:8]))
    torch.testing.assert_close(seen[0][1], whitening(x[8:]))


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"w_size should be at least twice .*w_size=4"):
        WMSELoss(embedding_dim=3, w_size=4)
    with pytest.raises(ValueError, match=r"num_samples must be >= 2"):
        WMSELoss(2, w_size=4, num_samples=1)
    loss_fn = WMSELoss(2, w_size=4)
    with pytest.raises(ValueError, match=r"input must have shape \(batch_size \* num_samples, 2\)"):
        loss_fn(torch.randn(8, 3))
    with pytest.raises(RuntimeError, match=r"divisible by num_samples=2, got 9 rows"):
        loss_fn(torch.randn(9, 2))  # also a ValueError; LightlySSL raises a RuntimeError
    with pytest.raises(ValueError, match=r"greater than or equal to w_size=4, got 3"):
        loss_fn(torch.randn(6, 2))
    with pytest.raises(ValueError, match=r"multiple of w_size=4, got 6"):
        loss_fn(torch.randn(12, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(batch_size, 2\)"):
        Whitening2d(2)(torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        Whitening2d(2, momentum=2.0)


@pytest.mark.parametrize(
    ("ours", "theirs"), [(WMSELoss, LightlyWMSELoss), (Whitening2d, LightlyWhitening2d)]
)
def test_same_arguments_as_lightly(ours: type, theirs: type) -> None:
    for method in ("__init__", "forward"):
        mine = inspect.signature(getattr(ours, method)).parameters
        peer = inspect.signature(getattr(theirs, method)).parameters
        assert list(mine)[: len(peer)] == list(peer)
        for name, param in peer.items():
            default = mine[name].default
            if callable(param.default):  # norm_mse_loss: each package's own
                assert default.__name__ == param.default.__name__
            else:
                assert default == param.default
