from __future__ import annotations

import pytest
import torch
from lightly.loss.memory_bank import MemoryBankModule as LightlyLossMemoryBankModule
from lightly.models.modules.memory_bank import MemoryBankModule as LightlyMemoryBankModule

from fastssl.loss.memory_bank import MemoryBankModule as LossMemoryBankModule
from fastssl.models.modules.memory_bank import MemoryBankModule
from fastssl.utils import dist
from tests._distributed import run_distributed


def test_loss_path_reexports_the_same_class() -> None:
    assert LossMemoryBankModule is MemoryBankModule
    assert LightlyLossMemoryBankModule is LightlyMemoryBankModule  # the path we mirror


@pytest.mark.parametrize("num_features", [5, 8, 13])
@pytest.mark.parametrize("batch_size", [1, 3, 8, 20])
@pytest.mark.parametrize("feature_dim_first", [True, False])
def test_matches_lightly(num_features: int, batch_size: int, feature_dim_first: bool) -> None:
    torch.manual_seed(0)
    ours = MemoryBankModule((num_features, 4), feature_dim_first=feature_dim_first)
    torch.manual_seed(0)
    theirs = LightlyMemoryBankModule((num_features, 4), feature_dim_first=feature_dim_first)
    for step in range(4):
        batch = torch.randn(batch_size, 4)
        out_ours, neg_ours = ours(batch, update=step != 2)
        out_theirs, neg_theirs = theirs(batch, update=step != 2)
        assert out_ours is batch and out_theirs is batch
        assert neg_ours is not None and neg_theirs is not None
        assert torch.equal(neg_ours, neg_theirs)
        assert torch.equal(ours.bank, theirs.bank)
        assert torch.equal(ours.bank_ptr, theirs.bank_ptr)


def test_fifo_rule_by_hand() -> None:
    bank = MemoryBankModule((5, 2), feature_dim_first=False)
    initial = bank.bank.clone()
    torch.testing.assert_close(initial.norm(dim=1), torch.ones(5))
    first = torch.arange(6.0).reshape(3, 2)
    _, negatives = bank(first, update=True)
    assert torch.equal(negatives, initial)  # the bank as it was before the update
    assert torch.equal(bank.bank[:3], first) and torch.equal(bank.bank[3:], initial[3:])
    assert int(bank.bank_ptr) == 3
    # Rows 3 and 4 take the first two rows of the next batch; its third row is dropped and
    # the pointer returns to 0.
    second = -torch.arange(6.0).reshape(3, 2) - 1
    bank(second, update=True)
    assert torch.equal(bank.bank[3:], second[:2])
    assert int(bank.bank_ptr) == 0


def test_negatives_are_detached_copies() -> None:
    bank = MemoryBankModule((4, 3))
    batch = torch.randn(2, 3, requires_grad=True)
    _, negatives = bank(batch, update=True)
    assert negatives is not None
    assert not negatives.requires_grad and not bank.bank.requires_grad
    assert negatives.shape == (3, 4)
    negatives.zero_()
    assert bank.bank.abs().sum() > 0


def test_disabled_bank_returns_none() -> None:
    bank = MemoryBankModule(0)
    batch = torch.randn(2, 3)
    out, negatives = bank(batch, update=True)
    assert out is batch and negatives is None
    assert bank.size == (0,)


def test_buffers_follow_dtype_and_are_not_saved() -> None:
    bank = MemoryBankModule((4, 3)).double()
    assert bank.bank.dtype == torch.float64 and bank.bank_ptr.dtype == torch.long
    assert bank.state_dict() == {}
    bank(torch.randn(2, 3), update=True)  # a float32 batch is cast into the float64 bank
    assert int(bank.bank_ptr) == 2


def test_deterministic_under_seed() -> None:
    torch.manual_seed(5)
    a = MemoryBankModule((6, 3)).bank
    torch.manual_seed(5)
    b = MemoryBankModule((6, 3)).bank
    assert torch.equal(a, b)


@pytest.mark.compile
def test_compile_fullgraph_update() -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = MemoryBankModule((7, 4))
    torch.manual_seed(0)
    module = MemoryBankModule((7, 4))
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    for _ in range(4):
        batch = torch.randn(3, 4)
        _, a = compiled(batch, update=True)
        _, b = eager(batch, update=True)
        assert a is not None and b is not None
        assert torch.equal(a, b)
    assert torch.equal(module.bank, eager.bank)
    assert torch.equal(module.bank_ptr, eager.bank_ptr)


@pytest.mark.parametrize(
    ("size", "error", "message"),
    [
        (3, ValueError, r"size=3 does not give the feature dimension; pass size=\(3, dim\)"),
        ((-2, 4), ValueError, r"non-negative, got size=\(-2, 4\)"),
        ([4], ValueError, r"\(num_features, dim\) tuple, got size=\[4\]"),
        ("abc", TypeError, r"entries must be ints, got 'abc'"),
        (None, TypeError, r"got None of type NoneType"),
        (True, TypeError, r"got True of type bool"),
    ],
)
def test_rejects_bad_size(size: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        MemoryBankModule(size)  # type: ignore[arg-type]


def _gather_update_worker() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    bank = MemoryBankModule((10, 2), gather_distributed=True, feature_dim_first=False)
    batch = torch.full((3, 2), float(dist.rank() + 1))
    bank(batch, update=True)
    return {"bank": bank.bank.clone(), "ptr": bank.bank_ptr.clone()}


@pytest.mark.dist
def test_gather_distributed_update() -> None:
    out = run_distributed(_gather_update_worker, 2)
    torch.manual_seed(0)
    initial = MemoryBankModule((10, 2)).bank
    expected = torch.cat([torch.ones(3, 2), 2 * torch.ones(3, 2), initial[6:]])
    for r in out:
        assert torch.equal(r["bank"], expected)
        assert int(r["ptr"]) == 6
