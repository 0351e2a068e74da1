"""Blockwise, memory-lean contrastive losses: NT-Xent, DCL and DCLW without a 2N x 2N matrix.

LightlySSL 1.6 builds the whole ``(2B, 2B)`` similarity matrix (plus masked and concatenated
copies of it) and autograd keeps it for the backward pass, so memory grows with the square of
the batch. Every contrastive loss here reduces to one primitive, a per-row log-sum-exp

    lse_i = log sum_{j not in exclude_i} exp(<q_i, k_j> / t)

over query rows ``q`` (the local views) and key rows ``k`` (all views, possibly gathered from
other processes, or memory-bank negatives), minus a positive logit that is an ``O(B * D)``
dot product computed with ordinary autograd (so DCL weights may carry gradient). Two
autograd functions evaluate it tile by tile; peak extra memory is one tile:

* :class:`BlockwiseLSE` (strategy "recompute") returns the ``(n,)`` log-sum-exps (an online
  log-sum-exp across column tiles, as in FlashAttention) and saves only ``q``, ``k``, the
  excluded indices and ``lse``; backward recomputes the similarity tiles.
* :class:`BlockwiseLSESum` (strategy "eager", the default where only the sum is needed:
  NT-Xent and DCL without a bank) returns ``sum_i lse_i`` and forms the gradients in the same
  sweep, since a scalar loss has a scalar upstream gradient: three matrix products per tile,
  the least an exact forward + backward needs, instead of four; it saves the ``O((n + m) d)``
  gradients.

Inside ``torch.compile`` the plain formula is traced instead (the tile loops are Python control
flow that would break the graph). Compiling the tile's exp-and-sum with inductor was tried and
dropped: 0.39 ms vs 0.34 ms eager per 256 x 4096 tile on the 2-core benchmark machine.

On CUDA tensors the same primitive runs as Triton kernels (``triton_contrastive``). Setting the
environment variable ``FASTSSL_FUSED_LOSS=0`` (or passing ``fused=False``) selects the plain
reference path that materialises the similarity matrix, for debugging and comparison.

Example:
    >>> import torch
    >>> out0, out1 = torch.randn(8, 16), torch.randn(8, 16)
    >>> ntxent_fused(out0, out1, temperature=0.5).shape
    torch.Size([])
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from fastssl.utils import dist

#: Environment variable that switches the public losses to the reference path when "0".
ENV_SWITCH = "FASTSSL_FUSED_LOSS"
#: Rows per tile. A 1024 x 4096 float32 tile is 16 MiB, a constant independent of the batch:
#: it stays in the L3 cache between the matmul that writes it and the exp/sum that read it,
#: and keeps the number of parallel regions small. Smaller tiles (256 rows) were as fast on
#: an idle machine but up to 1.5x slower when other processes compete for the cores, as every
#: op's thread barrier then waits for a descheduled thread (benchmarks/loss_kernels.py).
DEFAULT_BLOCK_ROWS = 1024
#: Columns per tile; the online log-sum-exp makes any value correct.
DEFAULT_BLOCK_COLS = 4096
#: "eager": one sweep forms the loss and its gradients (3 products per tile, the least an
#: exact forward + backward needs; about 30% faster on CPU at B=4096). "recompute": forward
#: keeps the per-row log-sum-exp only and backward recomputes the tiles (4 products).
STRATEGIES = ("eager", "recompute")
# A fixed shift c with |s| <= c turns log-sum-exp into log(sum(exp(s - c))) + c without a
# running maximum, provided exp(-2c) stays a normal float32 (exp(-80) ~ 1.8e-35 > 1.2e-38).
_FIXED_SHIFT_MAX = 40.0

WeightFn = Callable[[Tensor, Tensor], Tensor]


def use_fused(fused: bool | None = None) -> bool:
    """Whether the fused kernels run: ``fused`` if given, else ``$FASTSSL_FUSED_LOSS`` (on).

    Raises:
        ValueError: If the environment variable holds something other than 0/1/true/false.
    """
    if fused is not None:
        return fused
    value = os.environ.get(ENV_SWITCH, "1").strip().lower()
    if value in ("", "1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{ENV_SWITCH}={value!r} is not understood: use 1/true/on or 0/false/off.")


def _check_block(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return value


def _check_temperature(temperature: float) -> None:
    if abs(temperature) < 1e-8:
        raise ValueError(f"temperature must satisfy abs(temperature) >= 1e-8, got {temperature}.")


def _check_pair(out0: Tensor, out1: Tensor) -> None:
    if out0.ndim != 2 or out0.shape != out1.shape:
        raise ValueError(
            "out0 and out1 must both have shape (batch_size, embedding_size), got "
            f"{tuple(out0.shape)} and {tuple(out1.shape)}."
        )


def _check_lse_args(q: Tensor, k: Tensor, exclude: Tensor) -> None:
    if q.ndim != 2 or k.ndim != 2 or q.shape[1] != k.shape[1]:
        raise ValueError(
            f"q and k must have shapes (n, d) and (m, d), got {tuple(q.shape)} and "
            f"{tuple(k.shape)}."
        )
    if exclude.ndim != 2 or exclude.shape[0] != q.shape[0] or exclude.dtype != torch.long:
        raise ValueError(
            f"exclude must be an int64 tensor of shape (n, e) with n = {q.shape[0]}, got "
            f"{exclude.dtype} of shape {tuple(exclude.shape)}."
        )


def _mask_tile(s: Tensor, exclude: Tensor, c0: int) -> None:
    """Sets ``s[i, exclude[i] - c0] = -inf`` for the excluded columns inside this tile."""
    if exclude.shape[1] == 0:
        return
    local = exclude - c0
    inside = (local >= 0) & (local < s.shape[1])
    if bool(inside.all()):
        s.scatter_(1, local, float("-inf"))
        return
    rows, which = inside.nonzero(as_tuple=True)
    s.index_put_((rows, local[rows, which]), s.new_tensor(float("-inf")))


def _shift_bound(q: Tensor, k: Tensor, inv_t: float) -> float:
    """Upper bound of ``|<q_i, k_j>| * |inv_t|`` (Cauchy-Schwarz), from row norms."""
    if q.shape[0] == 0 or k.shape[0] == 0:
        return 0.0
    qmax = float(torch.linalg.vector_norm(q, dim=1).max())
    kmax = float(torch.linalg.vector_norm(k, dim=1).max())
    return abs(inv_t) * qmax * kmax


def _lse_forward(
    q: Tensor, k: Tensor, exclude: Tensor, inv_t: float, block_rows: int, block_cols: int
) -> Tensor:
    n, m = q.shape[0], k.shape[0]
    lse = q.new_empty(n)
    if n == 0:
        return lse
    if m == 0:
        return lse.fill_(float("-inf"))
    qs = q * inv_t
    br, bc = min(block_rows, n), min(block_cols, m)
    # One reused tile buffer: a fresh multi-MiB allocation per tile goes to mmap/munmap and
    # page faults on every call, which costs as much as the exp.
    buf = q.new_empty(br * bc)
    bound = _shift_bound(q, k, inv_t)
    fixed = bound <= _FIXED_SHIFT_MAX
    for r0 in range(0, n, br):
        r1 = min(r0 + br, n)
        q_b, ex_b = qs[r0:r1], exclude[r0:r1]
        total = q.new_zeros(r1 - r0)
        running = q.new_full((r1 - r0,), torch.finfo(q.dtype).min)
        for c0 in range(0, m, bc):
            c1 = min(c0 + bc, m)
            s = buf[: (r1 - r0) * (c1 - c0)].view(r1 - r0, c1 - c0)
            torch.mm(q_b, k[c0:c1].T, out=s)
            _mask_tile(s, ex_b, c0)
            if fixed:
                total += s.sub_(bound).exp_().sum(1)
            else:
                # Online log-sum-exp: rescale the running sum to the new row maximum.
                new = torch.maximum(running, s.amax(1))
                total.mul_(torch.exp(running - new)).add_(s.sub_(new[:, None]).exp_().sum(1))
                running = new
        lse[r0:r1] = total.log_().add_(bound if fixed else running)
    return lse


def _lse_backward(
    q: Tensor,
    k: Tensor,
    exclude: Tensor,
    lse: Tensor,
    grad: Tensor,
    inv_t: float,
    block_rows: int,
    block_cols: int,
    need_q: bool,
    need_k: bool,
) -> tuple[Tensor | None, Tensor | None]:
    n, m = q.shape[0], k.shape[0]
    dq = torch.zeros_like(q) if need_q else None
    dk = torch.zeros_like(k) if need_k else None
    if n == 0 or m == 0:
        return dq, dk
    qs = q * inv_t
    # d lse_i / d s_ij = softmax_ij, and s_ij = inv_t * <q_i, k_j>: fold grad_i * inv_t into
    # the O(n * d) operands instead of scaling every tile.
    g_scaled = (grad * inv_t).unsqueeze(1)
    q_weighted = q * g_scaled
    # Rows with every column excluded have lse = -inf; their tiles are all -inf and a zero
    # shift keeps exp() at 0 instead of nan.
    lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse)).unsqueeze(1)
    br, bc = min(block_rows, n), min(block_cols, m)
    buf = q.new_empty(br * bc)
    for r0 in range(0, n, br):
        r1 = min(r0 + br, n)
        q_b, ex_b, lse_b = qs[r0:r1], exclude[r0:r1], lse[r0:r1]
        for c0 in range(0, m, bc):
            c1 = min(c0 + bc, m)
            s = buf[: (r1 - r0) * (c1 - c0)].view(r1 - r0, c1 - c0)
            torch.mm(q_b, k[c0:c1].T, out=s)
            _mask_tile(s, ex_b, c0)
            p = s.sub_(lse_b).exp_()  # softmax over the kept columns
            if dq is not None:
                dq[r0:r1].addmm_(p, k[c0:c1])
            if dk is not None:
                dk[c0:c1].addmm_(p.T, q_weighted[r0:r1])
        if dq is not None:
            dq[r0:r1].mul_(g_scaled[r0:r1])
    return dq, dk


class BlockwiseLSE(torch.autograd.Function):
    """Per-row log-sum-exp of ``q @ k.T / t`` with excluded columns, computed tile by tile.

    Saves ``q``, ``k``, ``exclude`` and the ``(n,)`` result for backward: ``O((n + m) * d)``
    memory, never an ``(n, m)`` matrix; backward recomputes each similarity tile.
    """

    @staticmethod
    def forward(
        ctx: Any,
        q: Tensor,
        k: Tensor,
        exclude: Tensor,
        inv_t: float,
        block_rows: int,
        block_cols: int,
    ) -> Tensor:
        with torch.no_grad():
            lse = _lse_forward(q, k, exclude, inv_t, block_rows, block_cols)
        ctx.save_for_backward(q, k, exclude, lse)
        ctx.inv_t, ctx.block_rows, ctx.block_cols = inv_t, block_rows, block_cols
        return lse

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        q, k, exclude, lse = ctx.saved_tensors
        dq, dk = _lse_backward(
            q,
            k,
            exclude,
            lse,
            grad.contiguous(),
            ctx.inv_t,
            ctx.block_rows,
            ctx.block_cols,
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
        )
        return dq, dk, None, None, None, None


def _lse_sum_with_grads(
    q: Tensor, k: Tensor, exclude: Tensor, inv_t: float, tile_elems: int, with_grads: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``sum_i lse_i`` and, if asked, its gradients w.r.t. ``q`` and ``k`` in the same sweep.

    Each tile spans whole rows, so a row's log-sum-exp is final as soon as its tile is
    computed and the softmax can be used at once: three products per tile (the least an
    exact forward + backward needs) and one exp, instead of four products and two exps.
    """
    n, m = q.shape[0], k.shape[0]
    dq = torch.empty_like(q) if with_grads else None
    dk = torch.zeros_like(k) if with_grads else None
    if n == 0 or m == 0:
        total = q.new_zeros(()) if n == 0 else q.new_tensor(float("-inf"))
        return total, None if dq is None else dq.zero_(), dk
    qs = q * inv_t
    br = max(1, min(n, tile_elems // m))
    buf = q.new_empty(br * m)
    bound = _shift_bound(q, k, inv_t)
    fixed = bound <= _FIXED_SHIFT_MAX
    total = q.new_zeros(())
    for r0 in range(0, n, br):
        r1 = min(r0 + br, n)
        s = buf[: (r1 - r0) * m].view(r1 - r0, m)
        torch.mm(qs[r0:r1], k.T, out=s)
        _mask_tile(s, exclude[r0:r1], 0)
        shift = bound if fixed else s.amax(1, keepdim=True)
        row_sum = s.sub_(shift).exp_().sum(1, keepdim=True)
        total += (row_sum.log() + shift).sum()
        if dq is not None and dk is not None:
            # softmax = exp(s - shift) / row_sum: divide the (b, d) operands, not the tile.
            # A row with every column excluded has row_sum 0 and no gradient (not inf * 0).
            inv_sum = torch.where(row_sum > 0, row_sum.reciprocal(), 0.0)
            torch.mm(s, k, out=dq[r0:r1])
            dq[r0:r1].mul_(inv_sum)
            dk.addmm_(s.T, q[r0:r1] * inv_sum)
    if dq is not None and dk is not None:
        dq.mul_(inv_t)
        dk.mul_(inv_t)
    return total, dq, dk


class BlockwiseLSESum(torch.autograd.Function):
    """``sum_i lse_i`` whose forward sweep also computes the input gradients.

    For losses that only need the sum of the log-sum-exps (NT-Xent and DCL without a memory
    bank), the upstream gradient is one scalar, so the gradients can be formed in the
    forward sweep and scaled in backward. Saves the ``(n, d)`` and ``(m, d)`` gradients:
    ``O((n + m) * d)`` memory, no similarity matrix.
    """

    @staticmethod
    def forward(
        ctx: Any, q: Tensor, k: Tensor, exclude: Tensor, inv_t: float, tile_elems: int
    ) -> Tensor:
        with_grads = bool(ctx.needs_input_grad[0] or ctx.needs_input_grad[1])
        with torch.no_grad():
            total, dq, dk = _lse_sum_with_grads(q, k, exclude, inv_t, tile_elems, with_grads)
        ctx.save_for_backward(dq, dk)
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        dq, dk = ctx.saved_tensors
        gq = dq * grad if ctx.needs_input_grad[0] else None
        gk = dk * grad if ctx.needs_input_grad[1] else None
        return gq, gk, None, None, None


def reference_lse(q: Tensor, k: Tensor, exclude: Tensor, temperature: float) -> Tensor:
    """Plain-torch version of :func:`blockwise_lse` that materialises the (n, m) logits.

    Args:
        q: Query rows, shape (n, d).
        k: Key rows, shape (m, d).
        exclude: Column indices left out of row ``i``'s sum, int64 of shape (n, e).
        temperature: Logits are ``q @ k.T / temperature``.

    Returns:
        Tensor of shape (n,).

    Example:
        >>> q = torch.randn(3, 4)
        >>> reference_lse(q, q, torch.arange(3).unsqueeze(1), 0.5).shape
        torch.Size([3])
    """
    _check_lse_args(q, k, exclude)
    logits = (q @ k.T) / temperature
    logits = logits.scatter(1, exclude, float("-inf"))
    return torch.logsumexp(logits, dim=1)


def blockwise_lse(
    q: Tensor,
    k: Tensor,
    exclude: Tensor,
    temperature: float,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    block_cols: int = DEFAULT_BLOCK_COLS,
    backend: str | None = None,
) -> Tensor:
    """Differentiable per-row log-sum-exp of ``q @ k.T / temperature`` without an (n, m) buffer.

    The shared primitive of NT-Xent (SimCLR, Chen et al. 2020) and DCL (Yeh et al. 2022):
    ``lse_i = log sum_{j not in exclude[i]} exp(<q_i, k_j> / temperature)``. CUDA tensors use
    the Triton kernels, other devices the tiled CPU autograd function. Half precision inputs
    are computed in float32.

    Args:
        q: Query rows, shape (n, d).
        k: Key rows, shape (m, d).
        exclude: Column indices left out of row ``i``'s sum, int64 of shape (n, e); ``e`` may
            be 0.
        temperature: Logits are divided by it.
        block_rows: Rows per tile.
        block_cols: Columns per tile.
        backend: "torch" (tiled CPU/any-device autograd function), "triton", or None to pick
            Triton for CUDA tensors and torch otherwise.

    Returns:
        Tensor of shape (n,), dtype of ``q`` (float32 for half inputs).

    Raises:
        ValueError: On inconsistent shapes, a zero temperature, a non-positive block size or
            an unknown backend.

    Example:
        >>> q = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
        >>> lse = blockwise_lse(q, q, torch.arange(6).unsqueeze(1), 0.5, block_rows=4)
        >>> torch.allclose(lse, reference_lse(q, q, torch.arange(6).unsqueeze(1), 0.5))
        True
    """
    _check_lse_args(q, k, exclude)
    _check_temperature(temperature)
    _check_block("block_rows", block_rows)
    _check_block("block_cols", block_cols)
    if backend not in (None, "torch", "triton"):
        raise ValueError(f"backend must be None, 'torch' or 'triton', got {backend!r}.")
    if q.dtype not in (torch.float32, torch.float64):
        q = q.float()
    k = k.to(q.dtype)
    if backend == "triton" or (backend is None and q.is_cuda):
        from fastssl.kernels.triton_contrastive import triton_lse

        return triton_lse(q, k, exclude, temperature)
    out: Tensor = BlockwiseLSE.apply(
        q.contiguous(),
        k.contiguous(),
        exclude.contiguous(),
        1.0 / temperature,
        block_rows,
        block_cols,
    )
    return out


def _lse(
    q: Tensor,
    k: Tensor,
    exclude: Tensor,
    temperature: float,
    fused: bool | None,
    block_rows: int,
    block_cols: int,
) -> Tensor:
    if use_fused(fused) and not torch.compiler.is_compiling():
        return blockwise_lse(q, k, exclude, temperature, block_rows, block_cols)
    # Under torch.compile the tiled loops (data-dependent Python control flow) would break the
    # graph: trace the plain formula instead, which fullgraph=True accepts.
    return reference_lse(q, k, exclude, temperature)


def blockwise_lse_sum(
    q: Tensor,
    k: Tensor,
    exclude: Tensor,
    temperature: float,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    block_cols: int = DEFAULT_BLOCK_COLS,
    backend: str | None = None,
) -> Tensor:
    """``blockwise_lse(...).sum()``, with the gradients formed in the forward sweep on CPU.

    Takes the arguments of :func:`blockwise_lse`; a tile holds ``block_rows * block_cols``
    similarities and spans whole rows (:class:`BlockwiseLSESum`). CUDA tensors (or
    ``backend="triton"``) use the Triton kernels and sum their per-row result.

    Returns:
        Scalar tensor.

    Example:
        >>> q = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
        >>> exclude = torch.arange(6).unsqueeze(1)
        >>> total = blockwise_lse_sum(q, q, exclude, 0.5)
        >>> torch.allclose(total, reference_lse(q, q, exclude, 0.5).sum())
        True
    """
    if backend == "triton" or (backend is None and q.is_cuda):
        return blockwise_lse(q, k, exclude, temperature, block_rows, block_cols, backend).sum()
    _check_lse_args(q, k, exclude)
    _check_temperature(temperature)
    _check_block("block_rows", block_rows)
    _check_block("block_cols", block_cols)
    if backend not in (None, "torch"):
        raise ValueError(f"backend must be None, 'torch' or 'triton', got {backend!r}.")
    if q.dtype not in (torch.float32, torch.float64):
        q = q.float()
    k = k.to(q.dtype)
    out: Tensor = BlockwiseLSESum.apply(
        q.contiguous(), k.contiguous(), exclude.contiguous(), 1.0 / temperature,
        block_rows * block_cols,
    )  # fmt: skip
    return out


def _lse_total(
    q: Tensor,
    k: Tensor,
    exclude: Tensor,
    temperature: float,
    fused: bool | None,
    strategy: str,
    block_rows: int,
    block_cols: int,
) -> Tensor:
    """Sum over rows of the log-sum-exp, by the path that ``fused`` and ``strategy`` pick."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}.")
    if use_fused(fused) and strategy == "eager" and not torch.compiler.is_compiling():
        return blockwise_lse_sum(q, k, exclude, temperature, block_rows, block_cols)
    return _lse(q, k, exclude, temperature, fused, block_rows, block_cols).sum()


def _views(
    out0: Tensor, out1: Tensor, gather_distributed: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """Normalised local views ``(2B, d)`` and keys, with the row offset of the local views."""
    z0 = F.normalize(out0, dim=1)
    z1 = F.normalize(out1, dim=1)
    local = torch.cat([z0, z1])
    if gather_distributed and dist.is_distributed():
        # One collective for both views; its backward reduce-scatters the key gradients.
        return z0, z1, local, dist.gather_cat(local), dist.rank() * local.shape[0]
    return z0, z1, local, local, 0


def ntxent_fused(
    out0: Tensor,
    out1: Tensor,
    temperature: float = 0.5,
    memory_bank: Tensor | None = None,
    gather_distributed: bool = False,
    *,
    fused: bool | None = None,
    strategy: str = "eager",
    block_rows: int = DEFAULT_BLOCK_ROWS,
    block_cols: int = DEFAULT_BLOCK_COLS,
) -> Tensor:
    """NT-Xent loss (SimCLR, Chen et al. 2020, arXiv:2002.05709) without a quadratic buffer.

    Equals LightlySSL 1.6's ``NTXentLoss`` on the same inputs. Without a bank, each of the
    ``2B`` local views has the other view of its image as positive and every other view of
    the (gathered) batch as negative; the loss is the mean over the ``2B`` views of
    ``lse_i - s(i, i+) / t``. With ``memory_bank`` (MoCo, He et al. 2020) only the ``out0``
    views are anchors: positive ``s(out0_i, out1_i)``, negatives the bank rows, mean over
    ``B`` (``gather_distributed`` is then not used, as in LightlySSL).

    Args:
        out0: Raw projections of the first views, shape (B, d); normalised here.
        out1: Raw projections of the second views, shape (B, d).
        temperature: Logits are divided by it.
        memory_bank: Negatives, shape (K, d), used as given (LightlySSL's bank stores
            normalised rows; pass ``bank.T`` if it is kept as (d, K)), or None.
        gather_distributed: Use the views of all processes as negatives, with gradient.
        fused: True/False forces the kernel/reference path; None reads ``$FASTSSL_FUSED_LOSS``.
        strategy: "eager" (gradients formed in the forward sweep) or "recompute" (backward
            recomputes the similarity tiles from the saved per-row log-sum-exp); see
            ``STRATEGIES``. The memory-bank path always recomputes.
        block_rows: Rows per tile of the fused kernel.
        block_cols: Columns per tile of the fused kernel.

    Returns:
        Scalar loss.

    Example:
        >>> out0, out1 = torch.randn(8, 16), torch.randn(8, 16)
        >>> bank = torch.nn.functional.normalize(torch.randn(32, 16), dim=1)
        >>> ntxent_fused(out0, out1, 0.1, memory_bank=bank).shape
        torch.Size([])
    """
    _check_pair(out0, out1)
    _check_temperature(temperature)
    batch = out0.shape[0]
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}.")
    if memory_bank is not None:
        if memory_bank.ndim != 2 or memory_bank.shape[1] != out0.shape[1]:
            raise ValueError(
                f"memory_bank must have shape (K, {out0.shape[1]}), got {tuple(memory_bank.shape)}."
            )
        z0 = F.normalize(out0, dim=1)
        z1 = F.normalize(out1, dim=1)
        positive = (z0 * z1).sum(1) / temperature
        bank = memory_bank.to(device=z0.device, dtype=z0.dtype)
        none = torch.empty(batch, 0, dtype=torch.long, device=z0.device)
        negatives = _lse(z0, bank, none, temperature, fused, block_rows, block_cols)
        # The positive is one more column of the softmax: fold it in with logaddexp.
        return (torch.logaddexp(positive, negatives) - positive).mean()

    z0, z1, local, keys, offset = _views(out0, out1, gather_distributed)
    rows = torch.arange(2 * batch, device=local.device)
    self_idx = (rows + offset).unsqueeze(1)
    lse_sum = _lse_total(
        local, keys, self_idx, temperature, fused, strategy, block_rows, block_cols
    )
    positive = (z0 * z1).sum(1) / temperature  # the same logit for both views of an image
    return (lse_sum - 2.0 * positive.sum()) / (2 * batch)


def negative_mises_fisher_weights(out0: Tensor, out1: Tensor, sigma: float = 0.5) -> Tensor:
    """DCLW weights ``2 - B * softmax_i(<out0_i, out1_i> / sigma)`` (Yeh et al. 2022).

    No gradient flows through the weights, as in LightlySSL 1.6.

    Args:
        out0: Normalised first views, shape (B, d).
        out1: Normalised second views, shape (B, d).
        sigma: Similarities are divided by it.

    Returns:
        Tensor of shape (B,).

    Example:
        >>> z = torch.nn.functional.normalize(torch.randn(4, 3), dim=1)
        >>> negative_mises_fisher_weights(z, z).shape
        torch.Size([4])
    """
    similarity = (out0.detach() * out1.detach()).sum(1) / sigma
    return 2 - out0.shape[0] * torch.softmax(similarity, dim=0)


def dcl_fused(
    out0: Tensor,
    out1: Tensor,
    temperature: float = 0.1,
    weight_fn: WeightFn | None = None,
    gather_distributed: bool = False,
    *,
    fused: bool | None = None,
    strategy: str = "eager",
    block_rows: int = DEFAULT_BLOCK_ROWS,
    block_cols: int = DEFAULT_BLOCK_COLS,
) -> Tensor:
    """Decoupled contrastive loss (DCL, Yeh et al. 2022, arXiv:2110.06848), no quadratic buffer.

    Equals LightlySSL 1.6's ``DCLLoss``: the positive leaves the denominator, so row ``i``
    sums over every other view except itself and its positive. Both directions are computed
    and averaged: ``0.5 * (mean_i l(out0_i) + mean_i l(out1_i))`` with
    ``l(a) = -w * s(a, a+) / t + lse(a)`` and ``w = weight_fn(out0, out1)`` (resp.
    ``weight_fn(out1, out0)``) on the normalised views, or 1.

    Args:
        out0: Raw projections of the first views, shape (B, d).
        out1: Raw projections of the second views, shape (B, d).
        temperature: Logits are divided by it.
        weight_fn: Weights of the positive term, called on normalised (B, d) views, returning
            (B,); may carry gradient.
        gather_distributed: Use the views of all processes as negatives, with gradient.
        fused: True/False forces the kernel/reference path; None reads ``$FASTSSL_FUSED_LOSS``.
        strategy: "eager" (gradients formed in the forward sweep) or "recompute" (backward
            recomputes the similarity tiles from the saved per-row log-sum-exp); see
            ``STRATEGIES``.
        block_rows: Rows per tile of the fused kernel.
        block_cols: Columns per tile of the fused kernel.

    Returns:
        Scalar loss.

    Example:
        >>> out0, out1 = torch.randn(8, 16), torch.randn(8, 16)
        >>> dcl_fused(out0, out1, temperature=0.1).shape
        torch.Size([])
    """
    _check_pair(out0, out1)
    _check_temperature(temperature)
    batch = out0.shape[0]
    z0, z1, local, keys, offset = _views(out0, out1, gather_distributed)
    rows = torch.arange(2 * batch, device=local.device)
    partner = (rows + batch) % (2 * batch)  # the other view of the same image
    exclude = torch.stack([rows + offset, partner + offset], dim=1)
    lse_sum = _lse_total(local, keys, exclude, temperature, fused, strategy, block_rows, block_cols)
    positive = (z0 * z1).sum(1) / temperature
    w0 = weight_fn(z0, z1) if weight_fn is not None else 1.0
    w1 = weight_fn(z1, z0) if weight_fn is not None else 1.0
    # 0.5 * (mean over out0 rows + mean over out1 rows) = sum over all 2B rows / 2B.
    return (lse_sum - (positive * w0).sum() - (positive * w1).sum()) / (2 * batch)


def dclw_fused(
    out0: Tensor,
    out1: Tensor,
    temperature: float = 0.1,
    sigma: float = 0.5,
    gather_distributed: bool = False,
    *,
    fused: bool | None = None,
    strategy: str = "eager",
    block_rows: int = DEFAULT_BLOCK_ROWS,
    block_cols: int = DEFAULT_BLOCK_COLS,
) -> Tensor:
    """Weighted DCL (DCLW, Yeh et al. 2022): DCL with negative von Mises-Fisher weights.

    Equals LightlySSL 1.6's ``DCLWLoss``. The weights use the local batch only, also with
    ``gather_distributed`` (as LightlySSL does), so DDP with DCLW is not exactly full-batch
    training.

    Args:
        out0: Raw projections of the first views, shape (B, d).
        out1: Raw projections of the second views, shape (B, d).
        temperature: Logits are divided by it.
        sigma: Similarities in the weights are divided by it.
        gather_distributed: Use the views of all processes as negatives, with gradient.
        fused: True/False forces the kernel/reference path; None reads ``$FASTSSL_FUSED_LOSS``.
        strategy: "eager" (gradients formed in the forward sweep) or "recompute" (backward
            recomputes the similarity tiles from the saved per-row log-sum-exp); see
            ``STRATEGIES``. The memory-bank path always recomputes.
        block_rows: Rows per tile of the fused kernel.
        block_cols: Columns per tile of the fused kernel.

    Returns:
        Scalar loss.

    Example:
        >>> out0, out1 = torch.randn(8, 16), torch.randn(8, 16)
        >>> dclw_fused(out0, out1, temperature=0.1, sigma=0.5).shape
        torch.Size([])
    """
    weight_fn = functools.partial(negative_mises_fisher_weights, sigma=sigma)
    return dcl_fused(
        out0,
        out1,
        temperature,
        weight_fn,
        gather_distributed,
        fused=fused,
        strategy=strategy,
        block_rows=block_rows,
        block_cols=block_cols,
    )
