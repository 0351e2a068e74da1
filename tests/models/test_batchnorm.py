import pytest
import torch
from torch import nn

from fastssl.models.batchnorm import (
    SplitBatchNorm,
    SyncBatchNorm,
    SyncBatchNormPlugin,
    convert_sync_batchnorm,
    get_norm_layer,
    revert_sync_batchnorm,
)
from fastssl.utils import dist
from tests._distributed import run_distributed


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5),
        nn.BatchNorm1d(5, momentum=None),
    )  # fmt: skip
    with torch.no_grad():  # non-trivial affine parameters
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    return model


def _batch(n: int) -> torch.Tensor:
    return torch.randn(n, 3, 6, 6, generator=torch.Generator().manual_seed(1)) * 3 + 1


def _weights(n: int) -> torch.Tensor:
    return torch.randn(n, 5, generator=torch.Generator().manual_seed(2))


def _run(model: nn.Module, x: torch.Tensor, weights: torch.Tensor, steps: int = 2) -> dict:
    model.train()
    for _ in range(steps):
        model.zero_grad()
        out = model(x)
        (out * weights).sum().backward()
    return {
        "out": out.detach(),
        "grads": [p.grad.clone() for p in model.parameters()],
        "buffers": {k: v.clone() for k, v in model.state_dict().items()},
    }


def _worker(n: int) -> dict:
    model = convert_sync_batchnorm(_model())
    rows = slice(dist.rank() * n, (dist.rank() + 1) * n)
    return _run(model, _batch(2 * n)[rows], _weights(2 * n)[rows])


@pytest.mark.dist
@pytest.mark.parametrize("n", [3])
def test_two_processes_equal_full_batch(n: int) -> None:
    results = run_distributed(_worker, 2, n)
    full = _run(_model(), _batch(2 * n), _weights(2 * n))
    torch.testing.assert_close(
        torch.cat([r["out"] for r in results]), full["out"], atol=1e-5, rtol=1e-4
    )
    # The loss sums over ranks; gradients of local rows come back summed (reduce-scatter),
    # so the sum over ranks of parameter gradients equals the full-batch gradient.
    for i, g in enumerate(full["grads"]):
        torch.testing.assert_close(
            results[0]["grads"][i] + results[1]["grads"][i], g, atol=1e-4, rtol=1e-4
        )
    for key, value in full["buffers"].items():
        for r in results:
            torch.testing.assert_close(r["buffers"][key], value, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("train", [True, False])
def test_single_process_equals_plain_batchnorm(train: bool) -> None:
    plain, synced = _model(), convert_sync_batchnorm(_model())
    assert isinstance(synced[1], SyncBatchNorm) and isinstance(synced[5], SyncBatchNorm)
    plain.train(train)
    synced.train(train)
    x = _batch(4)
    torch.testing.assert_close(synced(x), plain(x))


def test_convert_keeps_state_and_revert_restores_classes() -> None:
    model = _model()
    model[1].weight.requires_grad_(False)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    converted = convert_sync_batchnorm(model)
    assert not converted[1].weight.requires_grad and not converted[1].training
    reverted = SyncBatchNormPlugin().revert(converted)
    assert type(reverted[1]) is nn.BatchNorm2d and type(reverted[5]) is nn.BatchNorm1d
    for k, v in reverted.state_dict().items():
        assert torch.equal(v, before[k])
    assert revert_sync_batchnorm(nn.Linear(2, 2)).__class__ is nn.Linear


def test_bad_input_rank() -> None:
    with pytest.raises(ValueError, match="at least 2-D"):
        SyncBatchNorm(3)(torch.randn(3))


# ------------------------------------------------------------------------------------------
# SplitBatchNorm (LightlySSL's lightly.models.batchnorm)
# ------------------------------------------------------------------------------------------


def _split_pair(channels: int, splits: int, **kw: float) -> tuple[SplitBatchNorm, nn.BatchNorm2d]:
    from lightly.models.batchnorm import SplitBatchNorm as LightlySplitBatchNorm

    ours = SplitBatchNorm(channels, splits, **kw)
    theirs = LightlySplitBatchNorm(channels, splits, **kw)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-0.5, 0.5)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def _running(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    return module.running_mean.clone(), module.running_var.clone()


@pytest.mark.parametrize("momentum", [0.1, 0.5])
@pytest.mark.parametrize(("channels", "splits", "batch"), [(3, 1, 4), (3, 4, 8), (5, 2, 6)])
def test_split_batchnorm_matches_lightly(
    channels: int, splits: int, batch: int, momentum: float
) -> None:
    ours, theirs = _split_pair(channels, splits, momentum=momentum)
    assert ours.running_mean.shape == (channels * splits,)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(batch, channels, 4, 5, generator=generator) * 2 + 1
        x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
        out, out_theirs = ours(x_ours), theirs(x_theirs)
        torch.testing.assert_close(out, out_theirs, rtol=1e-5, atol=1e-6)
        weight = torch.randn(out.shape, generator=generator)
        (out * weight).sum().backward()
        (out_theirs * weight).sum().backward()
        torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(_running(ours), _running(theirs))
    # Per-split statistics differ in training; leaving training averages them.
    if splits > 1:
        assert not torch.allclose(*ours.running_mean.view(splits, -1)[:2])
    ours.eval()
    theirs.eval()
    torch.testing.assert_close(_running(ours), _running(theirs))
    assert torch.equal(
        ours.running_mean.view(splits, -1), ours.running_mean[:channels].expand(splits, -1)
    )
    x = torch.randn(3, channels, 4, 5, generator=generator)  # any batch size in evaluation
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)
    assert int(ours.num_batches_tracked) == 3  # counted here, not in LightlySSL
    theirs.load_state_dict(ours.state_dict(), strict=True)


@pytest.mark.parametrize("affine", [True, False])
def test_split_batchnorm_is_batchnorm_per_split(affine: bool) -> None:
    """Split k holds the samples i with i % num_splits == k: each is batch-normed alone."""
    channels, splits, momentum = 3, 3, 0.3
    ours = SplitBatchNorm(channels, splits, momentum=momentum, affine=affine)
    if affine:
        with torch.no_grad():
            ours.weight.uniform_(0.5, 1.5)
            ours.bias.uniform_(-0.5, 0.5)
    x = torch.randn(9, channels, 2, 3, generator=torch.Generator().manual_seed(0)) * 3 - 1
    out = ours(x)
    for k in range(splits):
        part = x[k::splits]
        mean = part.mean(dim=(0, 2, 3))
        var = part.var(dim=(0, 2, 3), unbiased=False)
        expected = (part - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + ours.eps)
        if affine:
            expected = expected * ours.weight.view(1, -1, 1, 1) + ours.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(out[k::splits], expected, rtol=1e-5, atol=1e-5)
        rows = slice(k * channels, (k + 1) * channels)
        torch.testing.assert_close(ours.running_mean[rows], momentum * mean)
        n = part.numel() / channels
        torch.testing.assert_close(
            ours.running_var[rows], (1 - momentum) + momentum * var * n / (n - 1)
        )


def test_split_batchnorm_cumulative_average_without_momentum() -> None:
    bn = SplitBatchNorm(2, 2, momentum=None)
    batches = [torch.randn(4, 2, 3, 3) + i for i in range(3)]
    for x in batches:
        bn(x)
    assert int(bn.num_batches_tracked) == 3
    split_means = torch.stack([x[k::2].mean(dim=(0, 2, 3)) for x in batches for k in (0, 1)])
    expected = split_means.view(3, 2, 2).mean(dim=0).flatten()  # mean over batches
    torch.testing.assert_close(bn.running_mean, expected)


def test_split_batchnorm_without_running_stats_uses_batch_statistics() -> None:
    bn = SplitBatchNorm(2, 2, track_running_stats=False).eval()
    assert bn.running_mean is None and bn.running_var is None
    x = torch.randn(4, 2, 3, 3)
    plain = nn.BatchNorm2d(2, track_running_stats=False)
    torch.testing.assert_close(bn(x)[0::2], plain(x[0::2]))


def test_split_batchnorm_errors() -> None:
    bn = SplitBatchNorm(2, 4)
    with pytest.raises(ValueError, match="multiple of 'num_splits'"):
        bn(torch.randn(6, 2, 3, 3))
    with pytest.raises(ValueError, match="4-D"):
        bn(torch.randn(8, 2, 3))
    with pytest.raises(ValueError, match="num_splits"):
        SplitBatchNorm(2, 0)


@pytest.mark.parametrize("num_splits", [0, 1, 8])
def test_get_norm_layer(num_splits: int) -> None:
    from lightly.models.batchnorm import get_norm_layer as lightly_get_norm_layer

    layer = get_norm_layer(6, num_splits)
    theirs = lightly_get_norm_layer(6, num_splits)
    assert type(layer).__name__ == type(theirs).__name__
    assert isinstance(layer, SplitBatchNorm) == (num_splits > 0)
    assert {k: v.shape for k, v in layer.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    # Extra BatchNorm2d arguments are passed on.
    assert get_norm_layer(6, num_splits, eps=1e-3).eps == 1e-3


def test_convert_sync_batchnorm_keeps_split_batchnorm() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), SplitBatchNorm(4, 2), nn.BatchNorm2d(4))
    converted = convert_sync_batchnorm(model)
    assert type(converted[1]) is SplitBatchNorm and type(converted[2]) is SyncBatchNorm
