from __future__ import annotations

import pytest
import torch
from lightly.loss import DCLLoss as LightlyDCLLoss
from lightly.loss import DCLWLoss as LightlyDCLWLoss
from lightly.loss.dcl_loss import (
    negative_mises_fisher_weights as lightly_negative_mises_fisher_weights,
)
from torch.nn import functional as F

from fastssl.loss.dcl_loss import DCLLoss, DCLWLoss, dcl_loss, negative_mises_fisher_weights
from tests._distributed import run_distributed
from tests.loss._ddp import assert_ddp_matches_full_batch, ddp_worker, full_batch

# lightly's negative_mises_fisher_weights copies a tensor with torch.tensor(...).
pytestmark = pytest.mark.filterwarnings("ignore:To copy construct:UserWarning")


def _pair(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, d, generator=g).requires_grad_(),
        torch.randn(n, d, generator=g).requires_grad_(),
    )


def _value_and_grads(
    loss_fn: torch.nn.Module, out0: torch.Tensor, out1: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    loss = loss_fn(out0, out1)
    return (loss.detach(), *torch.autograd.grad(loss, (out0, out1)))


def _squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).sum(dim=1)


def _naive_dcl(
    out0: torch.Tensor, out1: torch.Tensor, temperature: float, sigma: float | None
) -> torch.Tensor:
    """Eq. 6 of Yeh et al., image by image and view by view."""
    z0, z1 = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
    n = z0.shape[0]
    terms = []
    for first, second in ((z0, z1), (z1, z0)):
        if sigma is None:
            weights = [1.0] * n
        else:
            sims = torch.stack([torch.dot(first[i], second[i]) for i in range(n)]).detach()
            weights = [
                2 - n * torch.exp(sims[i] / sigma) / torch.exp(sims / sigma).sum() for i in range(n)
            ]
        for i in range(n):
            negatives = [
                torch.dot(first[i], v[j]) / temperature
                for v in (first, second)
                for j in range(n)
                if j != i
            ]
            terms.append(
                -weights[i] * torch.dot(first[i], second[i]) / temperature
                + torch.log(torch.exp(torch.stack(negatives)).sum())
            )
    return torch.stack(terms).mean()


@pytest.mark.usefixtures("loss_path")
@pytest.mark.parametrize("n", [2, 3, 8])
@pytest.mark.parametrize("temperature", [0.07, 0.1, 0.5])
def test_dcl_matches_lightly(n: int, temperature: float) -> None:
    out0, out1 = _pair(n, 8)
    ours = _value_and_grads(DCLLoss(temperature), out0, out1)
    theirs = _value_and_grads(LightlyDCLLoss(temperature), out0, out1)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.usefixtures("loss_path")
@pytest.mark.parametrize("n", [2, 5])
@pytest.mark.parametrize(("temperature", "sigma"), [(0.1, 0.5), (0.2, 1.0), (0.5, 0.1)])
def test_dclw_matches_lightly(n: int, temperature: float, sigma: float) -> None:
    out0, out1 = _pair(n, 8, seed=1)
    ours = _value_and_grads(DCLWLoss(temperature, sigma), out0, out1)
    theirs = _value_and_grads(LightlyDCLWLoss(temperature, sigma), out0, out1)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.usefixtures("loss_path")
def test_custom_weight_fn_matches_lightly() -> None:
    out0, out1 = _pair(4, 6, seed=2)
    ours = _value_and_grads(DCLLoss(0.1, weight_fn=_squared_distance), out0, out1)
    theirs = _value_and_grads(LightlyDCLLoss(0.1, weight_fn=_squared_distance), out0, out1)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.usefixtures("loss_path")
@pytest.mark.parametrize("sigma", [None, 0.5])
@pytest.mark.parametrize("n", [2, 4])
def test_matches_paper_formula(sigma: float | None, n: int) -> None:
    out0, out1 = _pair(n, 5, seed=n)
    loss_fn = DCLLoss(0.3) if sigma is None else DCLWLoss(0.3, sigma)
    expected = _naive_dcl(out0, out1, 0.3, sigma)
    torch.testing.assert_close(loss_fn(out0, out1), expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        torch.autograd.grad(loss_fn(out0, out1), out1)[0],
        torch.autograd.grad(expected, out1)[0],
        rtol=1e-4,
        atol=1e-6,
    )


@pytest.mark.parametrize("sigma", [0.1, 0.5, 2.0])
def test_negative_mises_fisher_weights(sigma: float) -> None:
    out0, out1 = _pair(6, 4)
    weights = negative_mises_fisher_weights(out0, out1, sigma)
    torch.testing.assert_close(weights, lightly_negative_mises_fisher_weights(out0, out1, sigma))
    assert weights.shape == (6,) and not weights.requires_grad
    torch.testing.assert_close(weights.mean(), torch.tensor(1.0))


def test_pure_function_equals_module() -> None:
    out0, out1 = _pair(4, 6)
    torch.testing.assert_close(dcl_loss(out0, out1, 0.2), DCLLoss(0.2)(out0, out1))


def test_deterministic() -> None:
    out0, out1 = _pair(5, 6)
    assert torch.equal(DCLWLoss()(out0, out1), DCLWLoss()(out0, out1))


@pytest.mark.compile
@pytest.mark.parametrize("loss_cls", [DCLLoss, DCLWLoss])
def test_compile_fullgraph(loss_cls: type[DCLLoss]) -> None:
    torch._dynamo.reset()
    loss_fn = loss_cls(temperature=0.2)
    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    out0, out1 = _pair(4, 6)
    for a, b in zip(
        _value_and_grads(compiled, out0, out1), _value_and_grads(loss_fn, out0, out1), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DCLLoss(temperature=0.0), r"temperature=0.0: abs\(temperature\) must be >= 1e-8"),
        (lambda: DCLWLoss(sigma=0.0), r"sigma=0.0: abs\(sigma\) must be >= 1e-8"),
    ],
)
def test_rejects_zero_scales(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_rejects_non_callable_weight_fn() -> None:
    with pytest.raises(TypeError, match=r"weight_fn must be None or a callable.*got 3"):
        DCLLoss(weight_fn=3)  # type: ignore[arg-type]


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"got \(2, 3\) and \(3, 3\)"):
        DCLLoss()(torch.randn(2, 3), torch.randn(3, 3))


DDP_CASES = [
    {"loss_cls": DCLLoss, "kwargs": {"temperature": 0.2}, "global_batch": 8, "dim": 5, "steps": 1},
    # DCLW's weights are a softmax over the batch: they must see the global batch.
    {
        "loss_cls": DCLWLoss,
        "kwargs": {"temperature": 0.2, "sigma": 0.5},
        "global_batch": 8,
        "dim": 5,
        "steps": 1,
    },
]
# LightlySSL 1.6 weights each process's batch alone: its DDP gradients differ.
LIGHTLY_DCLW = {**DDP_CASES[1], "loss_cls": LightlyDCLWLoss}


@pytest.mark.dist
def test_ddp_gradients_equal_full_batch() -> None:
    per_rank = run_distributed(ddp_worker, 2, [*DDP_CASES, LIGHTLY_DCLW])
    for i, case in enumerate(DDP_CASES):
        assert_ddp_matches_full_batch(case, [r[i] for r in per_rank])
    lightly_grad = torch.stack([r[-1]["grads"][0][0] for r in per_rank]).mean(dim=0)
    full_grad = full_batch(LIGHTLY_DCLW)["grads"][0][0]
    assert (lightly_grad - full_grad).abs().max() > 1e-3
