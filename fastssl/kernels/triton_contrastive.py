"""Triton kernels of the blockwise contrastive log-sum-exp (GPU path of ``contrastive``).

Same math as :func:`fastssl.kernels.contrastive.blockwise_lse`: the forward kernel streams key
tiles past a resident block of query rows with an online log-sum-exp and writes only the
``(n,)`` result; backward recomputes the similarity tiles, once per query block for ``dq``
and once per key block for ``dk`` (as FlashAttention-2 does), so no ``(n, m)`` matrix exists
in either pass. Float32 operands use IEEE products by default so the result equals the CPU
path to float32 rounding; ``input_precision="tf32"`` trades that for speed.

The kernels are checked on CPU tensors under ``TRITON_INTERPRET=1`` (tests/kernels).

Example:
    >>> import torch
    >>> q = torch.randn(64, 32, device="cuda")  # doctest: +SKIP
    >>> exclude = torch.arange(64, device="cuda").unsqueeze(1)  # doctest: +SKIP
    >>> triton_lse(q, q, exclude, 0.5).shape  # doctest: +SKIP
    torch.Size([64])
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

#: Query rows and key rows per program; tl.dot needs at least 16.
BLOCK_M = 32
BLOCK_N = 32


@triton.jit
def _tile(
    q_scaled: Any,
    K: Any,
    stride_k: Any,
    cols: Any,
    m: Any,
    d: Any,
    ex0: Any,
    ex1: Any,
    BLOCK_D: tl.constexpr,
    N_EX: tl.constexpr,
    PRECISION: tl.constexpr,
) -> Any:
    """Masked logits of a (BLOCK_M, BLOCK_N) tile: excluded and padded columns are -inf."""
    dd = tl.arange(0, BLOCK_D)
    col_ok = cols < m
    kt = tl.load(
        K + cols[None, :] * stride_k + dd[:, None],
        mask=col_ok[None, :] & (dd[:, None] < d),
        other=0.0,
    )
    s = tl.dot(q_scaled, kt, input_precision=PRECISION)
    drop = ~col_ok[None, :]
    if N_EX > 0:
        drop = drop | (cols[None, :] == ex0[:, None])
    if N_EX > 1:
        drop = drop | (cols[None, :] == ex1[:, None])
    return tl.where(drop, float("-inf"), s)


@triton.jit
def _load_rows(
    Q: Any,
    stride_q: Any,
    EX: Any,
    stride_ex: Any,
    rows: Any,
    n: Any,
    d: Any,
    inv_t: Any,
    BLOCK_D: tl.constexpr,
    N_EX: tl.constexpr,
) -> Any:
    dd = tl.arange(0, BLOCK_D)
    row_ok = rows < n
    q = tl.load(
        Q + rows[:, None] * stride_q + dd[None, :],
        mask=row_ok[:, None] & (dd[None, :] < d),
        other=0.0,
    )
    ex0 = tl.full(rows.shape, -1, tl.int64)
    ex1 = tl.full(rows.shape, -1, tl.int64)
    if N_EX > 0:
        ex0 = tl.load(EX + rows * stride_ex, mask=row_ok, other=-1)
    if N_EX > 1:
        ex1 = tl.load(EX + rows * stride_ex + 1, mask=row_ok, other=-1)
    return q, q * inv_t, ex0, ex1


@triton.jit
def _lse_fwd_kernel(
    Q: Any,
    K: Any,
    EX: Any,
    LSE: Any,
    n: Any,
    m: Any,
    d: Any,
    stride_q: Any,
    stride_k: Any,
    stride_ex: Any,
    inv_t: Any,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    N_EX: tl.constexpr,
    PRECISION: tl.constexpr,
) -> None:
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    _, q_scaled, ex0, ex1 = _load_rows(Q, stride_q, EX, stride_ex, rows, n, d, inv_t, BLOCK_D, N_EX)
    run_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    run_sum = tl.zeros([BLOCK_M], tl.float32)
    for c0 in range(0, m, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        s = _tile(q_scaled, K, stride_k, cols, m, d, ex0, ex1, BLOCK_D, N_EX, PRECISION)
        new_max = tl.maximum(run_max, tl.max(s, 1))
        # A row whose columns so far are all excluded keeps max -inf: shift by 0 instead,
        # so exp() sees -inf (-> 0) rather than -inf - -inf (-> nan).
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - shift) + tl.sum(tl.exp(s - shift[:, None]), 1)
        run_max = new_max
    lse = tl.where(run_sum > 0, run_max + tl.log(run_sum), float("-inf"))
    tl.store(LSE + rows, lse, mask=rows < n)


@triton.jit
def _lse_bwd_dq_kernel(
    Q: Any,
    K: Any,
    EX: Any,
    LSE: Any,
    G: Any,
    DQ: Any,
    n: Any,
    m: Any,
    d: Any,
    stride_q: Any,
    stride_k: Any,
    stride_ex: Any,
    inv_t: Any,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    N_EX: tl.constexpr,
    PRECISION: tl.constexpr,
) -> None:
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n
    dd = tl.arange(0, BLOCK_D)
    _, q_scaled, ex0, ex1 = _load_rows(Q, stride_q, EX, stride_ex, rows, n, d, inv_t, BLOCK_D, N_EX)
    lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
    g = tl.load(G + rows, mask=row_ok, other=0.0)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for c0 in range(0, m, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        s = _tile(q_scaled, K, stride_k, cols, m, d, ex0, ex1, BLOCK_D, N_EX, PRECISION)
        p = tl.exp(s - lse[:, None])
        k = tl.load(
            K + cols[:, None] * stride_k + dd[None, :],
            mask=(cols[:, None] < m) & (dd[None, :] < d),
            other=0.0,
        )
        acc += tl.dot(p, k, input_precision=PRECISION)
    acc = acc * (g * inv_t)[:, None]
    tl.store(
        DQ + rows[:, None] * stride_q + dd[None, :], acc, mask=row_ok[:, None] & (dd[None, :] < d)
    )


@triton.jit
def _lse_bwd_dk_kernel(
    Q: Any,
    K: Any,
    EX: Any,
    LSE: Any,
    G: Any,
    DK: Any,
    n: Any,
    m: Any,
    d: Any,
    stride_q: Any,
    stride_k: Any,
    stride_ex: Any,
    inv_t: Any,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    N_EX: tl.constexpr,
    PRECISION: tl.constexpr,
) -> None:
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    dd = tl.arange(0, BLOCK_D)
    acc = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for r0 in range(0, n, BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M)
        row_ok = rows < n
        q, q_scaled, ex0, ex1 = _load_rows(
            Q, stride_q, EX, stride_ex, rows, n, d, inv_t, BLOCK_D, N_EX
        )
        lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
        g = tl.load(G + rows, mask=row_ok, other=0.0)
        s = _tile(q_scaled, K, stride_k, cols, m, d, ex0, ex1, BLOCK_D, N_EX, PRECISION)
        # Padded rows load lse = 0 and q = 0: their logits are 0, so weight them by g = 0.
        p = tl.exp(s - lse[:, None]) * (g * inv_t)[:, None]
        acc += tl.dot(tl.trans(p), q, input_precision=PRECISION)
    tl.store(
        DK + cols[:, None] * stride_k + dd[None, :],
        acc,
        mask=(cols[:, None] < m) & (dd[None, :] < d),
    )


def _block_d(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def lse_forward(q: Tensor, k: Tensor, exclude: Tensor, inv_t: float, precision: str) -> Tensor:
    """Per-row log-sum-exp, shape (n,), float32, of float32 CUDA ``q`` (n, d), ``k`` (m, d)."""
    n, d = q.shape
    m = k.shape[0]
    n_ex = exclude.shape[1]
    # A (n, 1) dummy keeps the pointer valid when nothing is excluded.
    ex = exclude if n_ex > 0 else torch.full((n, 1), -1, dtype=torch.long, device=q.device)
    lse = torch.empty(n, dtype=torch.float32, device=q.device)
    _lse_fwd_kernel[(triton.cdiv(n, BLOCK_M),)](
        q, k, ex, lse, n, m, d, q.stride(0), k.stride(0), ex.stride(0), inv_t,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=_block_d(d), N_EX=n_ex,
        PRECISION=precision,
    )  # fmt: skip
    return lse


def lse_backward(
    q: Tensor,
    k: Tensor,
    exclude: Tensor,
    lse: Tensor,
    grad: Tensor,
    inv_t: float,
    precision: str,
    need_q: bool,
    need_k: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of ``sum_i grad_i * lse_i`` w.r.t. ``q`` and ``k`` (None where not needed)."""
    n, d = q.shape
    m = k.shape[0]
    n_ex = exclude.shape[1]
    ex = exclude if n_ex > 0 else torch.full((n, 1), -1, dtype=torch.long, device=q.device)
    g = grad.to(torch.float32).contiguous()
    # Rows with every column excluded (lse = -inf) contribute nothing; 0 avoids nan.
    lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse)).float()
    common = dict(
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=_block_d(d), N_EX=n_ex, PRECISION=precision,
    )  # fmt: skip
    dq = dk = None
    if need_q:
        dq = torch.empty_like(q)
        _lse_bwd_dq_kernel[(triton.cdiv(n, BLOCK_M),)](
            q, k, ex, lse, g, dq, n, m, d, q.stride(0), k.stride(0), ex.stride(0),
            inv_t, **common,
        )  # fmt: skip
    if need_k:
        dk = torch.empty_like(k)
        _lse_bwd_dk_kernel[(triton.cdiv(m, BLOCK_N),)](
            q, k, ex, lse, g, dk, n, m, d, q.stride(0), k.stride(0), ex.stride(0),
            inv_t, **common,
        )  # fmt: skip
    return dq, dk


def triton_lse(
    q: Tensor, k: Tensor, exclude: Tensor, temperature: float, input_precision: str = "ieee"
) -> Tensor:
    """Per-row log-sum-exp of ``q @ k.T / temperature`` with up to 2 excluded columns per row.

    Args:
        q: Query rows, shape (n, d), float32.
        k: Key rows, shape (m, d), float32.
        exclude: Column indices left out of row ``i``'s sum, int64 of shape (n, e), e <= 2.
        temperature: Logits are divided by it.
        input_precision: ``tl.dot`` precision, "ieee" (exact float32) or "tf32".

    Returns:
        Tensor of shape (n,).

    Raises:
        ValueError: If ``exclude`` has more than 2 columns or ``input_precision`` is unknown.
    """
    from fastssl.kernels.contrastive import blockwise_lse

    # The one path to these kernels: the custom operator, with its autograd (checks there).
    return blockwise_lse(
        q, k, exclude, temperature, backend="triton", input_precision=input_precision
    )
