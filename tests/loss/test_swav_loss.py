from __future__ import annotations

import re

import pytest
import torch
from lightly.loss.swav_loss import SwaVLoss as LightlySwaVLoss
from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn
from torch import Tensor, nn

from fastssl.loss.swav_loss import SwaVLoss, sinkhorn
from fastssl.utils import dist
from tests._distributed import run_distributed

K = 6


def _scores(n: int, batch: int, seed: int, scale: float = 1.0) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(batch, K, generator=g)).requires_grad_() for _ in range(n)]


def _naive_sinkhorn(out: Tensor, iterations: int, epsilon: float) -> Tensor:
    """SwaV's Sinkhorn-Knopp in float64 with explicit loops over prototypes and samples."""
    q = torch.exp(out.double() / epsilon).T  # (K, B)
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        for row in range(k):  # every prototype gets mass 1 / K
            q[row] = q[row] / q[row].sum() / k
        for col in range(b):  # every sample gets mass 1 / B
            q[:, col] = q[:, col] / q[:, col].sum() / b
    return (q * b).T


@pytest.mark.parametrize("iterations", [0, 1, 3, 10])
@pytest.mark.parametrize("epsilon", [0.05, 0.5])
def test_sinkhorn_matches_lightly_and_naive_loop(iterations: int, epsilon: float) -> None:
    out = torch.randn(7, K, generator=torch.Generator().manual_seed(iterations))
    codes = sinkhorn(out, iterations=iterations, epsilon=epsilon)
    torch.testing.assert_close(
        codes, lightly_sinkhorn(out, iterations, epsilon), rtol=1e-4, atol=1e-6
    )
    torch.testing.assert_close(
        codes.double(), _naive_sinkhorn(out, iterations, epsilon), rtol=1e-4, atol=1e-6
    )
    assert codes.shape == out.shape and codes.dtype == out.dtype
    if iterations > 0:
        torch.testing.assert_close(codes.sum(dim=1), torch.ones(7))


def test_sinkhorn_converges_to_equipartition() -> None:
    codes = sinkhorn(torch.randn(12, 4), iterations=200, epsilon=0.5)
    torch.testing.assert_close(codes.sum(dim=0), torch.full((4,), 3.0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("iterations", [0, 3])
def test_sinkhorn_large_scores_stay_finite(iterations: int) -> None:
    # scores / epsilon are ~100 +- 20: exp overflows float32 (LightlySSL gives NaN) but
    # not float64, which gives the reference.
    out = 5.0 + torch.randn(8, K, generator=torch.Generator().manual_seed(0))
    assert torch.isnan(lightly_sinkhorn(out, iterations, 0.05)).any()
    codes = sinkhorn(out, iterations=iterations, epsilon=0.05)
    assert torch.isfinite(codes).all()
    expected = lightly_sinkhorn(out.double(), iterations, 0.05).float()
    torch.testing.assert_close(codes, expected, rtol=1e-4, atol=1e-6)


def test_sinkhorn_keeps_dtype() -> None:
    out = torch.randn(5, K)
    double = sinkhorn(out.double())
    assert double.dtype == torch.float64
    torch.testing.assert_close(double, lightly_sinkhorn(out.double()))
    codes = sinkhorn(out.bfloat16())
    assert codes.dtype == torch.bfloat16
    torch.testing.assert_close(
        codes.float(), sinkhorn(out.bfloat16().float()), atol=1e-2, rtol=1e-2
    )


CASES = [
    # (high-res crops, low-res crops, queue length or None, init kwargs)
    (2, 0, None, {}),
    (2, 4, None, {}),
    (3, 2, None, {"temperature": 0.2, "sinkhorn_iterations": 5, "sinkhorn_epsilon": 0.1}),
    (2, 2, 9, {}),
    (1, 2, 4, {"sinkhorn_iterations": 0}),
]


@pytest.mark.parametrize(("n_high", "n_low", "queue", "init"), CASES)
def test_matches_lightly_values_and_gradients(
    n_high: int, n_low: int, queue: int | None, init: dict
) -> None:
    high, low = _scores(n_high, 5, seed=0), _scores(n_low, 5, seed=1)
    queue_outputs = None if queue is None else _scores(n_high, queue, seed=2)
    inputs = high + low
    loss = SwaVLoss(**init)(high, low, queue_outputs)
    expected = LightlySwaVLoss(**init)(high, low, queue_outputs)
    assert loss.shape == expected.shape == torch.Size([1])
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)
    # With one high-resolution crop, that crop only gives codes: no gradient (None for
    # LightlySSL, exact zeros here as its prediction is added and subtracted).
    for g, e in zip(
        torch.autograd.grad(loss.sum(), inputs, allow_unused=True),
        torch.autograd.grad(expected.sum(), inputs, allow_unused=True),
        strict=True,
    ):
        if e is None:
            assert g is None or not g.any()
        else:
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
    if queue_outputs is not None:  # the codes never receive gradient
        assert all(q.grad is None for q in queue_outputs)


@pytest.mark.parametrize(("n_high", "n_low"), [(2, 0), (2, 3)])
def test_matches_paper_formula(n_high: int, n_low: int) -> None:
    """Loop over (code crop i, predicting crop v != i) pairs and samples, as in the paper."""
    high, low = _scores(n_high, 4, seed=3), _scores(n_low, 4, seed=4)
    crops = high + low
    temperature = 0.1
    total = torch.zeros(())
    for i in range(n_high):
        codes = _naive_sinkhorn(high[i].detach(), 3, 0.05).float()
        for v, z in enumerate(crops):
            if v == i:
                continue
            for b in range(4):
                total = total - (codes[b] * torch.log_softmax(z[b] / temperature, dim=0)).sum() / 4
    expected = total / (n_high * (len(crops) - 1))
    torch.testing.assert_close(SwaVLoss()(high, low), expected.reshape(1), rtol=1e-4, atol=1e-6)


def test_subloss_is_cross_entropy() -> None:
    z, q = torch.randn(3, K), torch.softmax(torch.randn(3, K), dim=1)
    loss_fn = SwaVLoss(temperature=0.5)
    expected = -(q * torch.log_softmax(z / 0.5, dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(loss_fn.subloss(z, q), expected)
    torch.testing.assert_close(
        loss_fn.subloss(z, q), LightlySwaVLoss(temperature=0.5).subloss(z, q)
    )


def test_deterministic() -> None:
    high, low = _scores(2, 4, seed=0), _scores(2, 4, seed=1)
    assert torch.equal(SwaVLoss()(high, low), SwaVLoss()(high, low))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 0.0}, "SwaVLoss 'temperature' must be > 0.0, got temperature=0.0"),
        (
            {"sinkhorn_iterations": -1},
            "'sinkhorn_iterations' must be >= 0, got sinkhorn_iterations=-1",
        ),
        ({"sinkhorn_epsilon": -0.1}, "'sinkhorn_epsilon' must be > 0.0, got sinkhorn_epsilon=-0.1"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        SwaVLoss(**kwargs)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match=re.escape("got 1 high-resolution and 0 low-resolution")):
        SwaVLoss()(_scores(1, 3, 0), [])
    with pytest.raises(ValueError, match=re.escape("got 0 high-resolution and 2 low-resolution")):
        SwaVLoss()([], _scores(2, 3, 0))
    with pytest.raises(
        ValueError,
        match=re.escape("'queue_outputs' must hold one tensor per high-resolution crop (2), got 1"),
    ):
        SwaVLoss()(_scores(2, 3, 0), [], _scores(1, 3, 1))


@pytest.mark.compile
@pytest.mark.parametrize("with_queue", [False, True])
def test_compile_fullgraph_matches_eager(with_queue: bool) -> None:
    torch._dynamo.reset()
    loss_fn = SwaVLoss()
    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    high, low = _scores(2, 4, seed=0), _scores(2, 4, seed=1)
    queue = _scores(2, 6, seed=2) if with_queue else None
    loss = compiled(high, low, queue)
    expected = loss_fn(high, low, queue)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(
        torch.autograd.grad(loss.sum(), high[0])[0], torch.autograd.grad(expected.sum(), high[0])[0]
    )


def _swav_step(global_batch: int, gather: bool) -> list[dict]:
    """One SwaV step of a small model on this process's share, for several settings."""
    r, w = dist.rank(), dist.world_size()
    n = global_batch // w
    results = []
    for iterations, queue_length in [(3, None), (0, None), (3, 4)]:
        torch.manual_seed(0)
        model = nn.Linear(5, K)
        data = torch.randn(4, global_batch, 5)
        local = data[:, r * n : (r + 1) * n]
        queue = None
        if queue_length:
            # Every process keeps its own queue; one process on the full batch holds both.
            queue_data = torch.randn(2, 2 * queue_length, K)
            m = 2 * queue_length // w
            queue = list(queue_data[:, r * m : (r + 1) * m])
        high = [model(x) for x in local[:2]]
        low = [model(x) for x in local[2:]]
        loss_fn = SwaVLoss(sinkhorn_iterations=iterations, sinkhorn_gather_distributed=gather)
        loss = loss_fn(high, low, queue)
        loss.sum().backward()
        codes = sinkhorn(high[0].detach(), iterations=iterations, gather_distributed=gather)
        local_codes = sinkhorn(high[0].detach(), iterations=iterations)
        results.append(
            {
                "loss": loss.detach(),
                "grads": [p.grad for p in model.parameters()],
                "codes": codes,
                "local_codes": local_codes,
            }
        )
    return results


@pytest.mark.dist
def test_two_processes_codes_and_gradients_equal_full_batch() -> None:
    per_rank = run_distributed(_swav_step, 2, 8, True)
    full = _swav_step(8, False)
    for case, expected in enumerate(full):
        ranks = [r[case] for r in per_rank]
        codes = torch.cat([ranks[0]["codes"], ranks[1]["codes"]])
        torch.testing.assert_close(codes, expected["codes"], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, expected["loss"])
        for g0, g1, e in zip(ranks[0]["grads"], ranks[1]["grads"], expected["grads"], strict=True):
            torch.testing.assert_close((g0 + g1) / 2, e, atol=1e-5, rtol=1e-4)
    # Without gathering, the per-process codes are not the full-batch ones.
    assert not torch.allclose(per_rank[0][0]["local_codes"], per_rank[0][0]["codes"], atol=1e-3)
