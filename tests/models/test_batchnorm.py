import pytest
import torch
from torch import nn

from fastssl.models.batchnorm import (
    SyncBatchNorm,
    SyncBatchNormPlugin,
    convert_sync_batchnorm,
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
