import pytest
import torch

from fastssl.utils import dist
from tests._distributed import run_distributed


def test_single_process_is_identity() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    assert dist.rank() == 0
    assert dist.world_size() == 1
    assert dist.gather_cat(x) is x
    (g,) = dist.gather(x)
    assert g is x
    assert torch.equal(dist.all_reduce_mean(x), x)


@pytest.mark.parametrize("n", [1, 3])
def test_eye_rank_single_process(n: int) -> None:
    assert torch.equal(dist.eye_rank(n), torch.eye(n, dtype=torch.bool))


def test_rank_zero_only_single_process() -> None:
    calls = []
    wrapped = dist.rank_zero_only(lambda v: calls.append(v) or v)
    assert wrapped(5) == 5
    assert calls == [5]


def _gather_worker(n: int) -> dict:
    r = dist.rank()
    x = (torch.arange(n * 2, dtype=torch.float32).reshape(n, 2) + 100 * r).requires_grad_()
    full = dist.gather_cat(x)
    weights = torch.arange(full.numel(), dtype=torch.float32).reshape(full.shape)
    # Every rank computes the same loss on the full batch: the gradient a rank's rows
    # receive is the sum over ranks, i.e. world_size * weights[rows of this rank].
    (full * weights).sum().backward()
    parts = dist.gather(x.detach())
    return {
        "rank": r,
        "world": dist.world_size(),
        "full": full.detach(),
        "grad": x.grad,
        "parts": [p.clone() for p in parts],
        "eye": dist.eye_rank(n),
        "sum": dist.all_reduce_sum(torch.tensor([float(r + 1)])),
        "zero_only": dist.rank_zero_only(lambda: "ran")(),
    }


@pytest.mark.dist
@pytest.mark.parametrize("n", [2, 3])
def test_gather_two_processes(n: int) -> None:
    out = run_distributed(_gather_worker, 2, n)
    expected = torch.cat(
        [torch.arange(n * 2, dtype=torch.float32).reshape(n, 2) + 100 * r for r in range(2)]
    )
    weights = torch.arange(expected.numel(), dtype=torch.float32).reshape(expected.shape)
    for r, o in enumerate(out):
        assert o["rank"] == r and o["world"] == 2
        assert torch.equal(o["full"], expected)
        assert torch.equal(o["grad"], 2 * weights[r * n : (r + 1) * n])
        assert len(o["parts"]) == 2 and torch.equal(torch.cat(o["parts"]), expected)
        eye = torch.zeros(n, 2 * n, dtype=torch.bool)
        eye[torch.arange(n), torch.arange(n) + r * n] = True
        assert torch.equal(o["eye"], eye)
        assert o["sum"].item() == 3.0
        assert o["zero_only"] == ("ran" if r == 0 else None)


def test_gather_layer_single_process_passes_gradient_through() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    (out,) = dist.GatherLayer.apply(x)
    assert torch.equal(out, x)
    weights = torch.randn(3, 4)
    (out * weights).sum().backward()
    assert torch.equal(x.grad, weights)


SHAPES = [(2, 3), (3, 2, 2)]


def _gather_layer_worker() -> list[dict]:
    """GatherLayer of fastssl and lightly on the same inputs, with a loss that weights the
    gathered tensors differently on every rank (so the gradient sum over ranks matters)."""
    from lightly.utils.dist import GatherLayer as LightlyGatherLayer

    r = dist.rank()
    results = []
    for shape in SHAPES:
        data = torch.randn(shape, generator=torch.Generator().manual_seed(r))
        weights = [
            torch.randn(shape, generator=torch.Generator().manual_seed(10 * r + i))
            for i in range(2)
        ]
        out: dict = {"weights": weights, "data": data}
        for name, layer in (("fastssl", dist.GatherLayer), ("lightly", LightlyGatherLayer)):
            x = data.clone().requires_grad_()
            parts = layer.apply(x)
            loss = sum(((p**2) * w).sum() for p, w in zip(parts, weights, strict=True))
            loss.backward()
            out[name] = {"parts": [p.detach() for p in parts], "grad": x.grad}
        results.append(out)
    return results


@pytest.mark.dist
def test_gather_layer_two_processes_matches_lightly() -> None:
    per_rank = run_distributed(_gather_layer_worker, 2)
    for s in range(len(SHAPES)):
        out = [per_rank[r][s] for r in range(2)]
        datas = [o["data"] for o in out]
        for r, o in enumerate(out):
            ours, theirs = o["fastssl"], o["lightly"]
            assert len(ours["parts"]) == 2
            for p, q, d in zip(ours["parts"], theirs["parts"], datas, strict=True):
                assert torch.equal(p, d) and torch.equal(p, q)
            # d/dx_r of sum_ranks sum_i w[rank][i] * part_i^2 = 2 x_r * sum_ranks w[rank][r].
            expected = 2 * datas[r] * sum(out[k]["weights"][r] for k in range(2))
            torch.testing.assert_close(ours["grad"], expected)
            torch.testing.assert_close(ours["grad"], theirs["grad"])
