from __future__ import annotations

import math

import pytest
import torch
from lightly.loss import NTXentLoss as LightlyNTXentLoss
from torch.nn import functional as F

from fastssl.loss.ntx_ent_loss import NTXentLoss, ntxent_loss, ntxent_memory_bank_loss
from tests._distributed import run_distributed
from tests.loss._ddp import assert_ddp_matches_full_batch, ddp_worker


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


def _naive_simclr(out0: torch.Tensor, out1: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's l(i, j) summed over all 2n views, written sample by sample."""
    z = [F.normalize(v, dim=0) for v in torch.cat([out0, out1])]
    n = out0.shape[0]
    total = torch.zeros(())
    for k in range(2 * n):
        positive = (k + n) % (2 * n)
        denominator = sum(
            torch.exp(torch.dot(z[k], z[j]) / temperature) for j in range(2 * n) if j != k
        )
        total = total - torch.log(
            torch.exp(torch.dot(z[k], z[positive]) / temperature) / denominator
        )
    return total / (2 * n)


@pytest.mark.usefixtures("loss_path")
@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("temperature", [0.07, 0.5, -0.3])
def test_matches_lightly(n: int, temperature: float) -> None:
    out0, out1 = _pair(n, 8)
    ours = _value_and_grads(NTXentLoss(temperature), out0, out1)
    theirs = _value_and_grads(LightlyNTXentLoss(temperature), out0, out1)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.usefixtures("loss_path")
@pytest.mark.parametrize("n", [1, 3, 6])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_matches_naive_loop(n: int, temperature: float) -> None:
    out0, out1 = _pair(n, 5, seed=n)
    expected = _naive_simclr(out0, out1, temperature)
    torch.testing.assert_close(ntxent_loss(out0, out1, temperature), expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        torch.autograd.grad(ntxent_loss(out0, out1, temperature), out0)[0],
        torch.autograd.grad(expected, out0)[0],
        rtol=1e-4,
        atol=1e-6,
    )


def test_identical_views_of_one_image_give_zero() -> None:
    # With a single image there are no negatives: the softmax has the positive alone.
    out = torch.randn(1, 4)
    assert NTXentLoss()(out, out).item() == 0.0


@pytest.mark.usefixtures("loss_path")
@pytest.mark.parametrize("bank_size", [4, 10, 32])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_memory_bank_matches_lightly(bank_size: int, temperature: float) -> None:
    torch.manual_seed(3)
    ours = NTXentLoss(temperature, memory_bank_size=(bank_size, 8))
    torch.manual_seed(3)
    theirs = LightlyNTXentLoss(temperature, memory_bank_size=(bank_size, 8))
    # The same draw of torch.randn initialises both banks.
    assert torch.equal(ours.memory_bank.bank, theirs.memory_bank.bank)
    for step in range(5):
        out0, out1 = _pair(3, 8, seed=step)
        for a, b in zip(
            _value_and_grads(ours, out0, out1), _value_and_grads(theirs, out0, out1), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ours.memory_bank.bank, theirs.memory_bank.bank)
        assert torch.equal(ours.memory_bank.bank_ptr, theirs.memory_bank.bank_ptr)


@pytest.mark.usefixtures("loss_path")
def test_memory_bank_formula_and_update_rule() -> None:
    loss_fn = NTXentLoss(0.2, memory_bank_size=(6, 4))
    bank_before = loss_fn.memory_bank.bank.clone()
    out0, out1 = _pair(4, 4)
    loss = loss_fn(out0, out1)
    # MoCo: -log(exp(q.k+ / t) / (exp(q.k+ / t) + sum_k exp(q.k / t))), negatives from the
    # bank as it was *before* this batch.
    q, k = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
    expected = torch.stack(
        [
            -torch.log_softmax(torch.cat([(q[i] * k[i]).sum()[None], bank_before @ q[i]]) / 0.2, 0)[
                0
            ]
            for i in range(4)
        ]
    ).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, ntxent_memory_bank_loss(out0, out1, bank_before, 0.2))
    # The normalised keys were written at rows 0..3 and the pointer moved on.
    torch.testing.assert_close(loss_fn.memory_bank.bank[:4], k.detach())
    torch.testing.assert_close(loss_fn.memory_bank.bank[4:], bank_before[4:])
    assert int(loss_fn.memory_bank.bank_ptr) == 4


def test_memory_bank_not_updated_without_grad() -> None:
    loss_fn = NTXentLoss(memory_bank_size=(6, 4))
    bank_before = loss_fn.memory_bank.bank.clone()
    with torch.no_grad():
        loss_fn(torch.randn(3, 4), torch.randn(3, 4))
    assert torch.equal(loss_fn.memory_bank.bank, bank_before)
    assert int(loss_fn.memory_bank.bank_ptr) == 0


def test_deterministic_under_seed() -> None:
    results = []
    for _ in range(2):
        torch.manual_seed(7)
        loss_fn = NTXentLoss(memory_bank_size=(8, 4))
        results.append((loss_fn(*_pair(3, 4)), loss_fn.memory_bank.bank.clone()))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


@pytest.mark.compile
@pytest.mark.parametrize("memory_bank_size", [0, (7, 8)])
def test_compile_fullgraph(memory_bank_size: int | tuple[int, int]) -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = NTXentLoss(0.2, memory_bank_size=memory_bank_size)
    torch.manual_seed(0)
    module = NTXentLoss(0.2, memory_bank_size=memory_bank_size)
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    for step in range(3):
        out0, out1 = _pair(3, 8, seed=step)
        for a, b in zip(
            _value_and_grads(compiled, out0, out1), _value_and_grads(eager, out0, out1), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if memory_bank_size:
        torch.testing.assert_close(module.memory_bank.bank, eager.memory_bank.bank)
        assert torch.equal(module.memory_bank.bank_ptr, eager.memory_bank.bank_ptr)


@pytest.mark.parametrize("temperature", [0.0, 1e-9, -1e-9])
def test_rejects_zero_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match=r"temperature=.*abs\(temperature\) must be >= 1e-8"):
        NTXentLoss(temperature)


@pytest.mark.parametrize(
    ("size", "error", "message"),
    [
        (5, ValueError, r"size=5 does not give the feature dimension"),
        ((-1, 4), ValueError, r"non-negative, got size=\(-1, 4\)"),
        ((4, 4, 4), ValueError, r"\(num_features, dim\) tuple, got size=\(4, 4, 4\)"),
        ((4.0, 4), TypeError, r"entries must be ints, got \(4.0, 4\)"),
    ],
)
def test_rejects_bad_memory_bank_size(size: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        NTXentLoss(memory_bank_size=size)  # type: ignore[arg-type]


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"out0 and out1 .* got \(3, 4\) and \(3, 5\)"):
        NTXentLoss()(torch.randn(3, 4), torch.randn(3, 5))


def test_loss_of_random_embeddings_is_near_log_of_negatives() -> None:
    # Sanity of the scale: with t = 1e3 every logit is ~0, so the loss is log(2n - 1).
    out0, out1 = _pair(16, 32)
    assert math.isclose(NTXentLoss(1e3)(out0, out1).item(), math.log(31), rel_tol=1e-3)


DDP_CASES = [
    {
        "loss_cls": NTXentLoss,
        "kwargs": {"temperature": 0.3},
        "global_batch": 8,
        "dim": 5,
        "steps": 1,
    },
    {
        "loss_cls": NTXentLoss,
        "kwargs": {"temperature": 0.3, "memory_bank_size": (12, 5)},
        "global_batch": 8,
        "dim": 5,
        "steps": 3,
    },
    # NTXentLoss with gather_distributed=True compiled (fullgraph, aot_eager) in each process.
    {
        "loss_cls": NTXentLoss,
        "kwargs": {"temperature": 0.3},
        "global_batch": 8,
        "dim": 5,
        "steps": 2,
        "compile_loss": True,
    },
]


@pytest.mark.dist
@pytest.mark.compile
def test_ddp_gradients_equal_full_batch() -> None:
    # One spawn for all cases: starting processes costs seconds.
    per_rank = run_distributed(ddp_worker, 2, DDP_CASES)
    for i, case in enumerate(DDP_CASES):
        assert_ddp_matches_full_batch(case, [r[i] for r in per_rank])
