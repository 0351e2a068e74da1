from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import nn

from fastssl.models.modules.nn_memory_bank import NNMemoryBankModule
from fastssl.utils import dist
from tests._distributed import run_distributed


def _naive_nearest(query: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Nearest neighbour by cosine similarity, one query at a time."""
    rows = []
    for q in query:
        sims = [nn.functional.cosine_similarity(q, b, dim=0) for b in bank]
        rows.append(bank[int(torch.stack(sims).argmax())])
    return torch.stack(rows)


@pytest.mark.parametrize(("num_features", "dim", "batch"), [(16, 8, 4), (10, 3, 4), (5, 6, 7)])
def test_matches_lightly_and_naive(num_features: int, dim: int, batch: int) -> None:
    torch.manual_seed(0)
    ours = NNMemoryBankModule(size=(num_features, dim))
    # Imported here, not at module level: the spawned processes of the dist test import
    # this module and should not pay for importing the oracle.
    from lightly.models.modules.nn_memory_bank import NNMemoryBankModule as LightlyNNMemoryBank

    torch.manual_seed(0)
    ref = LightlyNNMemoryBank(size=(num_features, dim))
    assert torch.equal(ours.bank, ref.bank)
    for step in range(5):
        x = torch.randn(batch, dim, requires_grad=True)
        update = step % 2 == 0
        bank_before = ours.bank.clone()
        out = ours(x, update=update)
        expected = ref(x, update=update)
        assert out.shape == (batch, dim) and not out.requires_grad
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=0)
        torch.testing.assert_close(out, _naive_nearest(x.detach(), bank_before), rtol=1e-4, atol=0)
        assert torch.equal(ours.bank, ref.bank)
        assert int(ours.bank_ptr) == int(ref.bank_ptr)


@pytest.mark.parametrize("tile_elems", [1, 7, 1 << 24])  # one row per block, 2 rows, all rows
def test_row_blocks_give_the_same_neighbours(
    tile_elems: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastssl.models.modules import nn_memory_bank

    monkeypatch.setattr(nn_memory_bank, "_NN_TILE_ELEMS", tile_elems)
    torch.manual_seed(1)
    bank = NNMemoryBankModule(size=(3, 5))
    x = torch.randn(9, 5)
    bank_before = bank.bank.clone()
    out = bank(x, update=False)
    torch.testing.assert_close(out, _naive_nearest(x, bank_before), rtol=1e-5, atol=0)


def test_update_happens_after_lookup_and_finds_stored_rows() -> None:
    torch.manual_seed(0)
    bank = NNMemoryBankModule(size=(8, 4))
    x = torch.randn(3, 4)
    first = bank(x, update=True)
    assert not any(torch.equal(row, xi) for row in first for xi in x)  # not its own neighbour
    assert torch.equal(bank(x * 2.0), x)  # stored rows are found again (cosine: scale-free)


def test_lazy_int_size_and_default() -> None:
    torch.manual_seed(0)
    bank = NNMemoryBankModule()
    assert bank.size == (2**16,)
    out = bank(torch.randn(4, 5), update=True)
    assert out.shape == (4, 5)
    assert bank.size == (2**16, 5) and bank.bank.shape == (2**16, 5) and int(bank.bank_ptr) == 4
    torch.testing.assert_close(bank.bank[4:].norm(dim=1), torch.ones(2**16 - 4))
    # Lazy sizing draws the same initial bank as an explicit size under the same seed.
    torch.manual_seed(1)
    lazy = NNMemoryBankModule(size=32)
    lazy(torch.zeros(1, 6))
    torch.manual_seed(1)
    assert torch.equal(lazy.bank, NNMemoryBankModule(size=(32, 6)).bank)


@pytest.mark.parametrize(
    ("size", "error", "match"),
    [
        (0, ValueError, r"needs a non-empty bank, got size=0"),
        ((0, 4), ValueError, r"needs a non-empty bank, got size=\(0, 4\)"),
        ((-1, 4), ValueError, r"'size' entries must be non-negative, got size=\(-1, 4\)"),
        (
            (4, 4, 4),
            ValueError,
            r"must be 0 or a \(num_features, dim\) tuple, got size=\(4, 4, 4\)",
        ),
        ("big", TypeError, r"'size' entries must be ints"),
    ],
)
def test_bad_size(size: int | Sequence[int], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        NNMemoryBankModule(size=size)


def test_bad_output_shape() -> None:
    bank = NNMemoryBankModule(size=(8, 4))
    with pytest.raises(ValueError, match=r"'output' has dim 3 but the bank stores dim 4"):
        bank(torch.randn(2, 3))
    with pytest.raises(
        ValueError, match=r"'output' must have shape \(batch_size, dim\), got \(2, 3, 4\)"
    ):
        bank(torch.randn(2, 3, 4))


def _gather_worker() -> dict:
    torch.manual_seed(0)  # same initial bank on every rank
    bank = NNMemoryBankModule(size=(16, 4), gather_distributed=True)
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4) + 100 * dist.rank()
    bank(x, update=True)
    return {"bank": bank.bank.clone(), "ptr": int(bank.bank_ptr)}


@pytest.mark.dist
def test_gather_distributed_two_processes() -> None:
    out = run_distributed(_gather_worker, 2)
    expected = torch.cat([torch.arange(12.0).reshape(3, 4) + 100 * r for r in range(2)])
    for o in out:
        assert o["ptr"] == 6
        assert torch.equal(o["bank"][:6], expected)
    assert torch.equal(out[0]["bank"], out[1]["bank"])
