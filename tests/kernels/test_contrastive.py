"""The blockwise kernels behind the public NT-Xent / DCL / DCLW losses, against LightlySSL 1.6,
naive loops and DDP (the losses run the kernels by default: these tests go through them)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from lightly.loss import DCLLoss, DCLWLoss, NTXentLoss
from torch import Tensor, nn
from torch.nn import functional as F

from fastssl.kernels import contrastive
from fastssl.kernels.contrastive import (
    STRATEGIES,
    blockwise_lse,
    blockwise_lse_sum,
    reference_lse,
    use_fused,
)
from fastssl.loss.dcl_loss import dcl_loss, negative_mises_fisher_weights
from fastssl.loss.ntx_ent_loss import ntxent_loss, ntxent_memory_bank_loss
from fastssl.utils import dist
from tests._distributed import run_distributed

# LightlySSL's DCLW weights copy-construct a tensor and warn about it on every call.
pytestmark = pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning")

ROOT = Path(__file__).resolve().parents[2]
# (block_rows, block_cols): tiles smaller than, not dividing, and larger than the batch.
BLOCKS = [(4, 5), (16, 64), (256, 4096)]


def dclw_loss(
    out0: Tensor,
    out1: Tensor,
    temperature: float = 0.1,
    sigma: float = 0.5,
    gather_distributed: bool = False,
    **kw: Any,
) -> Tensor:
    """What ``DCLWLoss`` computes: DCL with negative von Mises-Fisher weights."""
    weights = partial(negative_mises_fisher_weights, sigma=sigma)
    return dcl_loss(out0, out1, temperature, weights, gather_distributed, **kw)


def bank_loss(out0: Tensor, out1: Tensor, temperature: float, bank: Tensor, **kw: Any) -> Tensor:
    """NT-Xent with memory-bank negatives, with the two views as first arguments."""
    return ntxent_memory_bank_loss(out0, out1, bank, temperature, **kw)


def _pair(batch: int, dim: int, dtype: torch.dtype, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    out0 = torch.randn(batch, dim, generator=g, dtype=dtype).requires_grad_()
    out1 = torch.randn(batch, dim, generator=g, dtype=dtype).requires_grad_()
    return out0, out1


def _value_and_grads(
    fn: Callable[[Tensor, Tensor], Tensor], out0: Tensor, out1: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    loss = fn(out0, out1)
    g0, g1 = torch.autograd.grad(loss, (out0, out1))
    return loss.detach(), g0, g1


def _assert_same(
    ours: tuple[Tensor, ...], theirs: tuple[Tensor, ...], rtol: float = 1e-4, atol: float = 1e-6
) -> None:
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b.to(a.dtype), rtol=rtol, atol=atol)


# --- against LightlySSL 1.6 -------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3, 37, 70])
@pytest.mark.parametrize("temperature", [0.02, 0.1, 0.5])
@pytest.mark.parametrize("blocks", BLOCKS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ntxent_matches_lightly(
    batch: int, temperature: float, blocks: tuple[int, int], strategy: str
) -> None:
    out0, out1 = _pair(batch, 16, torch.float32)
    kw = dict(block_rows=blocks[0], block_cols=blocks[1], strategy=strategy)
    ours = _value_and_grads(partial(ntxent_loss, temperature=temperature, **kw), out0, out1)
    theirs = _value_and_grads(NTXentLoss(temperature=temperature), out0, out1)
    _assert_same(ours, theirs)


@pytest.mark.parametrize("batch", [2, 9, 33])
@pytest.mark.parametrize("bank_size", [1, 50])
@pytest.mark.parametrize("blocks", BLOCKS[:2])
def test_ntxent_memory_bank_matches_lightly(
    batch: int, bank_size: int, blocks: tuple[int, int]
) -> None:
    out0, out1 = _pair(batch, 8, torch.float32)
    torch.manual_seed(3)
    lightly_loss = NTXentLoss(temperature=0.2, memory_bank_size=(bank_size, 8))
    bank = lightly_loss.memory_bank.bank.clone()  # (K, d) before LightlySSL enqueues the batch
    theirs = _value_and_grads(lightly_loss, out0, out1)
    ours = _value_and_grads(
        partial(bank_loss, temperature=0.2, bank=bank, block_rows=blocks[0], block_cols=blocks[1]),
        out0,
        out1,
    )
    _assert_same(ours, theirs)


@pytest.mark.parametrize("batch", [2, 5, 37, 70])
@pytest.mark.parametrize("temperature", [0.02, 0.1, 0.5])
@pytest.mark.parametrize("blocks", BLOCKS)
def test_dcl_and_dclw_match_lightly(
    batch: int, temperature: float, blocks: tuple[int, int]
) -> None:
    out0, out1 = _pair(batch, 16, torch.float32, seed=1)
    kw = dict(block_rows=blocks[0], block_cols=blocks[1])
    ours = _value_and_grads(partial(dcl_loss, temperature=temperature, **kw), out0, out1)
    theirs = _value_and_grads(DCLLoss(temperature=temperature), out0, out1)
    _assert_same(ours, theirs)
    ours_w = _value_and_grads(
        partial(dclw_loss, temperature=temperature, sigma=0.3, **kw), out0, out1
    )
    theirs_w = _value_and_grads(DCLWLoss(temperature=temperature, sigma=0.3), out0, out1)
    _assert_same(ours_w, theirs_w)


def test_dcl_weight_fn_with_gradient_matches_lightly() -> None:
    # LightlySSL's docstring example: a weight that depends on (and differentiates through)
    # the views; the kernel keeps the positive term outside so autograd sees the weight.
    def weight_fn(a: Tensor, b: Tensor) -> Tensor:
        return torch.sum((a - b) ** 2, dim=1)

    out0, out1 = _pair(11, 6, torch.float64)
    ours = _value_and_grads(
        partial(dcl_loss, temperature=0.3, weight_fn=weight_fn, block_rows=4), out0, out1
    )
    theirs = _value_and_grads(DCLLoss(temperature=0.3, weight_fn=weight_fn), out0, out1)
    _assert_same(ours, theirs, rtol=1e-10, atol=1e-12)


def test_negative_mises_fisher_weights_match_lightly() -> None:
    from lightly.loss.dcl_loss import negative_mises_fisher_weights as theirs

    z0 = F.normalize(torch.randn(9, 4), dim=1)
    z1 = F.normalize(torch.randn(9, 4), dim=1)
    torch.testing.assert_close(negative_mises_fisher_weights(z0, z1, 0.7), theirs(z0, z1, 0.7))


# --- against the paper's formulas, written as loops --------------------------------------------


def _naive_ntxent(out0: Tensor, out1: Tensor, t: float) -> Tensor:
    z = F.normalize(torch.cat([out0, out1]), dim=1)
    n = out0.shape[0]
    total = out0.new_zeros(())
    for a in range(2 * n):
        denominator = sum(torch.exp(z[a] @ z[b] / t) for b in range(2 * n) if b != a)
        total = total - z[a] @ z[(a + n) % (2 * n)] / t + torch.log(denominator)
    return total / (2 * n)


def _naive_dcl(out0: Tensor, out1: Tensor, t: float, w: Callable[..., Tensor] | None) -> Tensor:
    z0, z1 = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
    z = torch.cat([z0, z1])
    n = out0.shape[0]
    weights = torch.cat([w(z0, z1), w(z1, z0)]) if w else torch.ones(2 * n, dtype=z.dtype)
    total = out0.new_zeros(())
    for a in range(2 * n):
        pos = (a + n) % (2 * n)
        denominator = sum(torch.exp(z[a] @ z[b] / t) for b in range(2 * n) if b not in (a, pos))
        total = total - weights[a] * (z[a] @ z[pos]) / t + torch.log(denominator)
    return total / (2 * n)


def _naive_bank(out0: Tensor, out1: Tensor, bank: Tensor, t: float) -> Tensor:
    z0, z1 = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
    total = out0.new_zeros(())
    for a in range(out0.shape[0]):
        logits = [z0[a] @ z1[a] / t] + [z0[a] @ bank[j] / t for j in range(bank.shape[0])]
        total = total - logits[0] + torch.log(sum(torch.exp(x) for x in logits))
    return total / out0.shape[0]


@pytest.mark.parametrize("batch", [2, 3])
@pytest.mark.parametrize("temperature", [0.01, 0.3])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_against_naive_loops(batch: int, temperature: float, strategy: str) -> None:
    out0, out1 = _pair(batch, 4, torch.float64, seed=5)
    bank = F.normalize(torch.randn(5, 4, dtype=torch.float64), dim=1)
    nmf = partial(negative_mises_fisher_weights, sigma=0.5)
    cases: list[tuple[Callable[..., Tensor], Callable[..., Tensor]]] = [
        (partial(ntxent_loss, temperature=temperature, strategy=strategy, block_rows=3,
                 block_cols=2),
         partial(_naive_ntxent, t=temperature)),
        (partial(bank_loss, temperature=temperature, bank=bank, block_cols=2),
         partial(_naive_bank, bank=bank, t=temperature)),
        (partial(dcl_loss, temperature=temperature, strategy=strategy, block_rows=1,
                 block_cols=3),
         partial(_naive_dcl, t=temperature, w=None)),
        (partial(dclw_loss, temperature=temperature, sigma=0.5, strategy=strategy,
                 block_cols=3),
         partial(_naive_dcl, t=temperature, w=nmf)),
    ]  # fmt: skip
    for ours, naive in cases:
        _assert_same(_value_and_grads(ours, out0, out1), _value_and_grads(naive, out0, out1),
                     rtol=1e-9, atol=1e-11)  # fmt: skip


# --- the primitive --------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 30.0])  # 30: norms > 1 force the online-max path
@pytest.mark.parametrize("n_exclude", [0, 1, 2])
def test_blockwise_lse_matches_reference(scale: float, n_exclude: int) -> None:
    g = torch.Generator().manual_seed(2)
    q = (scale * torch.randn(13, 5, generator=g, dtype=torch.float64)).requires_grad_()
    k = torch.randn(17, 5, generator=g, dtype=torch.float64).requires_grad_()
    exclude = torch.stack([torch.randperm(17, generator=g)[:n_exclude] for _ in range(13)])
    weights = torch.randn(13, generator=g, dtype=torch.float64)
    ours = blockwise_lse(q, k, exclude, 0.4, block_rows=4, block_cols=6)
    theirs = reference_lse(q, k, exclude, 0.4)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad((ours * weights).sum(), (q, k))
    ref_grads = torch.autograd.grad((theirs * weights).sum(), (q, k))
    _assert_same(grads, ref_grads, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 30.0])
@pytest.mark.parametrize("n_exclude", [0, 2])
@pytest.mark.parametrize("tile", [1, 40, 10_000])  # a tile of 1, 2 or all rows of k (m=17)
def test_blockwise_lse_sum_matches_reference(scale: float, n_exclude: int, tile: int) -> None:
    g = torch.Generator().manual_seed(4)
    q = (scale * torch.randn(13, 5, generator=g, dtype=torch.float64)).requires_grad_()
    k = torch.randn(17, 5, generator=g, dtype=torch.float64).requires_grad_()
    exclude = torch.stack([torch.randperm(17, generator=g)[:n_exclude] for _ in range(13)])
    ours = blockwise_lse_sum(q, k, exclude, 0.4, block_rows=1, block_cols=tile)
    theirs = reference_lse(q, k, exclude, 0.4).sum()
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(2.5 * ours, (q, k))
    _assert_same(grads, torch.autograd.grad(2.5 * theirs, (q, k)), rtol=1e-10, atol=1e-12)


def test_eager_sum_skips_gradient_work_without_grad(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bool, bool]] = []
    sweep = contrastive._lse_sum_with_grads

    def spy(*args: Any) -> Any:
        calls.append(args[-2:])
        return sweep(*args)

    monkeypatch.setattr(contrastive, "_lse_sum_with_grads", spy)
    q = torch.randn(5, 3, requires_grad=True)
    with torch.no_grad():
        total = blockwise_lse_sum(q, q, torch.arange(5).unsqueeze(1), 0.5)
    torch.testing.assert_close(total, reference_lse(q, q, torch.arange(5).unsqueeze(1), 0.5).sum())
    assert total.grad_fn is None
    # Keys without gradient (MoCo's momentum keys): only dq is formed.
    blockwise_lse_sum(q, q.detach(), torch.arange(5).unsqueeze(1), 0.5).backward()
    assert calls == [(False, False), (True, False)]


def test_blockwise_lse_all_columns_excluded_is_minus_inf_without_nan_gradient() -> None:
    q = torch.randn(3, 4, requires_grad=True)
    exclude = torch.tensor([[0], [0], [1]])  # rows 0 and 1 exclude k's only column
    lse = blockwise_lse(q, q[:1], exclude, 0.5, block_rows=2)
    assert torch.isneginf(lse[:2]).all() and torch.isfinite(lse[2])
    (grad,) = torch.autograd.grad(lse[2] + 0 * lse.sum(), q)
    assert torch.isfinite(grad).all()
    total = blockwise_lse_sum(q, q[:1], exclude, 0.5)
    assert torch.isneginf(total)
    (grad,) = torch.autograd.grad(total, q)
    assert torch.isfinite(grad).all()
    # Only row 2's single logit q2 . q0 / 0.5 carries gradient.
    (expected,) = torch.autograd.grad(q[2] @ q[0] / 0.5, q)
    torch.testing.assert_close(grad, expected)


def test_deterministic() -> None:
    out0, out1 = _pair(40, 8, torch.float32)
    first = _value_and_grads(partial(dcl_loss, block_rows=7, block_cols=9), out0, out1)
    second = _value_and_grads(partial(dcl_loss, block_rows=7, block_cols=9), out0, out1)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_half_precision_inputs_are_computed_in_float32() -> None:
    out0, out1 = _pair(6, 8, torch.bfloat16)
    loss = ntxent_loss(out0, out1)
    expected = NTXentLoss()(out0.float(), out1.float())
    torch.testing.assert_close(loss.float(), expected, rtol=1e-2, atol=1e-2)
    loss.backward()
    assert out0.grad is not None and out0.grad.dtype == torch.bfloat16


# --- memory: no quadratic buffer --------------------------------------------------------------


def _saved_numels(loss: Tensor) -> list[tuple[str, int]]:
    """Numel of every tensor saved for backward anywhere in ``loss``'s autograd graph."""
    seen, stack, found = set(), [loss.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        saved: list[Any] = []
        if hasattr(node, "saved_tensors"):
            saved.extend(node.saved_tensors)
        for name in dir(node):
            if name.startswith("_saved_"):
                saved.append(getattr(node, name))
        found.extend((type(node).__name__, t.numel()) for t in saved if isinstance(t, Tensor))
        stack.extend(fn for fn, _ in node.next_functions)
    return found


@pytest.mark.parametrize("loss_fn", [ntxent_loss, dcl_loss, dclw_loss])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_saved_tensors_are_linear_in_batch(loss_fn: Callable[..., Tensor], strategy: str) -> None:
    batch, dim = 256, 8
    out0, out1 = _pair(batch, dim, torch.float32)
    loss = loss_fn(out0, out1, strategy=strategy)
    saved = _saved_numels(loss)
    node = "fastssl_lse_sum" if strategy == "eager" else "fastssl_lse_rows"
    assert any(node in name for name, _ in saved)
    # Every saved tensor is at most a (2B, d) or (2B, 2) buffer, far below one (2B, 2B) matrix.
    assert max(numel for _, numel in saved) <= 2 * batch * dim
    # The same walk finds LightlySSL's quadratic buffers, so this check can fail.
    theirs = _saved_numels(NTXentLoss()(out0, out1))
    assert max(numel for _, numel in theirs) >= batch * batch


def test_peak_rss_growth_is_far_below_one_similarity_matrix() -> None:
    script = textwrap.dedent(
        """
        import resource, torch
        from fastssl.loss import NTXentLoss
        from fastssl.loss.ntx_ent_loss import ntxent_loss
        torch.manual_seed(0)
        a = torch.randn(4096, 32, requires_grad=True)
        b = torch.randn(4096, 32, requires_grad=True)
        NTXentLoss()(a[:300], b[:300]).backward()  # warm up allocator and kernels
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        NTXentLoss()(a, b).backward()  # the public class, as users call it
        ntxent_loss(a, b, strategy="recompute").backward()  # maxrss bounds both peaks
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    growth_mib = int(run.stdout.strip()) / 1024  # ru_maxrss is in KiB on Linux
    matrix_mib = (2 * 4096) ** 2 * 4 / 2**20  # one float32 (2B, 2B) matrix: 256 MiB
    assert growth_mib < matrix_mib / 8, growth_mib


# --- switches and failure modes ---------------------------------------------------------------


def test_env_switch_selects_reference_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any) -> Tensor:
        raise AssertionError("fused kernel used")

    monkeypatch.setattr(contrastive, "_lse_rows_op", boom)
    monkeypatch.setattr(contrastive, "_lse_sum_op", boom)
    out0, out1 = _pair(5, 4, torch.float32)
    monkeypatch.setenv(contrastive.ENV_SWITCH, "0")
    torch.testing.assert_close(ntxent_loss(out0, out1), NTXentLoss()(out0, out1))
    monkeypatch.setenv(contrastive.ENV_SWITCH, "1")
    with pytest.raises(AssertionError, match="fused kernel used"):
        ntxent_loss(out0, out1)
    with pytest.raises(AssertionError, match="fused kernel used"):
        dcl_loss(out0, out1, fused=True, strategy="recompute")
    monkeypatch.setenv(contrastive.ENV_SWITCH, "maybe")
    with pytest.raises(ValueError, match="FASTSSL_FUSED_LOSS='maybe'"):
        use_fused()
    assert use_fused(False) is False


def test_bad_arguments_raise() -> None:
    out0, out1 = _pair(4, 3, torch.float32)
    with pytest.raises(ValueError, match=r"temperature=0.0: abs\(temperature\) must be >= 1e-8"):
        ntxent_loss(out0, out1, temperature=0.0)
    with pytest.raises(ValueError, match=r"out0 and out1 must .* got \(4, 3\) and \(3, 3\)"):
        dcl_loss(out0, out1[:3])
    with pytest.raises(ValueError, match=r"negatives must have shape \(K, 3\), got \(3, 5\)"):
        bank_loss(out0, out1, 0.5, torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"strategy must be one of \('eager', 'recompute'\)"):
        ntxent_loss(out0, out1, strategy="lazy")
    with pytest.raises(ValueError, match=r"strategy must be .* got 'lazy'"):
        dcl_loss(out0, out1, strategy="lazy")
    with pytest.raises(ValueError, match="block_rows must be a positive int, got 0"):
        ntxent_loss(out0, out1, block_rows=0)
    with pytest.raises(ValueError, match=r"exclude must be an int64 tensor .* got torch.int32"):
        blockwise_lse(out0, out1, torch.zeros(4, 1, dtype=torch.int32), 0.5)
    with pytest.raises(ValueError, match=r"backend must be .* got 'cuda'"):
        blockwise_lse(out0, out1, torch.zeros(4, 1, dtype=torch.long), 0.5, backend="cuda")


@pytest.mark.compile
@pytest.mark.parametrize("loss_fn", [ntxent_loss, dcl_loss, dclw_loss])
def test_compiles_fullgraph_without_breaks(loss_fn: Callable[..., Tensor]) -> None:
    torch._dynamo.reset()
    out0, out1 = _pair(6, 4, torch.float32)
    compiled = torch.compile(partial(loss_fn, temperature=0.3), backend="aot_eager", fullgraph=True)
    _assert_same(
        _value_and_grads(compiled, out0, out1),
        _value_and_grads(partial(loss_fn, temperature=0.3), out0, out1),
    )


# --- distributed: two processes equal one full batch ------------------------------------------

_DIST_LOSSES: dict[str, Callable[..., Tensor]] = {
    "ntxent": partial(ntxent_loss, temperature=0.3, block_rows=5, block_cols=7),
    "ntxent_recompute": partial(
        ntxent_loss, temperature=0.3, strategy="recompute", block_rows=5, block_cols=7
    ),
    "ntxent_reference": partial(ntxent_loss, temperature=0.3, fused=False),
    "dcl": partial(dcl_loss, temperature=0.2, block_rows=3, block_cols=11),
    "dcl_recompute": partial(dcl_loss, temperature=0.2, strategy="recompute", block_rows=3),
}


def _train_step(rows: slice, gather: bool, global_batch: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(global_batch, 6, generator=g)
    x1 = torch.randn(global_batch, 6, generator=g)
    results = {}
    for name, loss_fn in _DIST_LOSSES.items():
        torch.manual_seed(0)
        model = nn.Linear(6, 5)
        loss = loss_fn(model(x0[rows]), model(x1[rows]), gather_distributed=gather)
        loss.backward()
        results[name] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
    return results


def _ddp_worker(global_batch: int) -> dict[str, Any]:
    local = global_batch // dist.world_size()
    shapes: list[tuple[int, int]] = []
    kernel = contrastive._lse_sum_op

    def recorded(q: Tensor, k: Tensor, *args: Any) -> Any:
        shapes.append((q.shape[0], k.shape[0]))
        return kernel(q, k, *args)

    contrastive_any: Any = contrastive
    contrastive_any._lse_sum_op = recorded
    try:
        rows = slice(dist.rank() * local, (dist.rank() + 1) * local)
        results = _train_step(rows, True, global_batch)
    finally:
        contrastive_any._lse_sum_op = kernel
    results["kernel_shapes"] = shapes
    return results


@pytest.mark.dist
def test_two_processes_equal_full_batch() -> None:
    global_batch = 12
    per_rank = run_distributed(_ddp_worker, 2, global_batch)
    full = _train_step(slice(None), False, global_batch)
    # Each process ran the kernel on its own 2 x 6 views against all 2 x 12 gathered views
    # (ntxent and dcl, eager strategy): local x global similarities, never global squared.
    for r in per_rank:
        assert r.pop("kernel_shapes") == [(12, 24), (12, 24)]
    for name, (full_loss, full_grads) in full.items():
        # DDP averages parameter gradients; the mean of the local losses is the global loss.
        mean_loss = sum(r[name][0] for r in per_rank) / 2
        torch.testing.assert_close(mean_loss, full_loss, rtol=1e-5, atol=1e-6)
        for i, full_grad in enumerate(full_grads):
            mean_grad = sum(r[name][1][i] for r in per_rank) / 2
            torch.testing.assert_close(mean_grad, full_grad, rtol=1e-5, atol=1e-5, msg=name)
    # Gathering really happened: a rank's local-only loss differs from its gathered loss.
    alone = _train_step(slice(0, global_batch // 2), False, global_batch)
    assert not torch.allclose(alone["ntxent"][0], per_rank[0]["ntxent"][0])
