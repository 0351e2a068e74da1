"""Blockwise, memory-lean contrastive log-sum-exp: NT-Xent, DCL and MoCo without a 2N x 2N matrix.

LightlySSL 1.6 builds the whole ``(2B, 2B)`` similarity matrix (plus masked and concatenated
copies of it) and autograd keeps it for the backward pass, so memory grows with the square of
the batch. Every contrastive loss of fastssl (``NTXentLoss`` with or without a memory bank,
``DCLLoss``, ``DCLWLoss``, MoCo v3's InfoNCE) reduces to one primitive, a per-row
log-sum-exp

    lse_i = log sum_{j not in exclude_i} exp(<q_i, k_j> / t)

over query rows ``q`` (the local views) and key rows ``k`` (all views, possibly gathered from
other processes, or memory-bank negatives), minus a positive logit that is an ``O(B * D)``
dot product computed with ordinary autograd (so DCL weights may carry gradient). The losses
call the two dispatchers of this module, :func:`lse_sum` and :func:`lse_rows`; they run

* on CPUs, tiled code that never holds more than one tile of similarities. Strategy "eager"
  (the default where only the sum is needed: NT-Xent, DCL, MoCo v3) forms the loss and its
  gradients in one sweep, since a scalar loss has a scalar upstream gradient: three matrix
  products per tile, the least an exact forward + backward needs. Strategy "recompute"
  (and every per-row use, such as the memory bank's ``logaddexp`` with the positive) keeps
  only the ``(n,)`` log-sum-exps and recomputes the tiles in backward (an online
  log-sum-exp across column tiles, as in FlashAttention);
* on CUDA tensors, the Triton kernels of :mod:`fastssl.kernels.triton_contrastive`;
* with ``fused=False`` or ``FASTSSL_FUSED_LOSS=0``, the plain reference formula that
  materialises the similarity matrix (for debugging and comparison).

Both kernels are ``torch.library`` custom operators with registered autograd formulas and
shape functions, so ``torch.compile(fullgraph=True)`` keeps them in the graph as single
opaque calls: a compiled training step runs the same kernels as an eager one.

Example:
    >>> import torch
    >>> q = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    >>> lse_sum(q, q, torch.arange(8).unsqueeze(1), temperature=0.5).shape
    torch.Size([])
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

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
#: Kernel backends: the tiled torch code (any device) and the Triton kernels (CUDA).
BACKENDS = ("torch", "triton")
# A fixed shift c with |s| <= c turns log-sum-exp into log(sum(exp(s - c))) + c without a
# running maximum, provided exp(-2c) stays a normal float32 (exp(-80) ~ 1.8e-35 > 1.2e-38).
_FIXED_SHIFT_MAX = 40.0


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


def pick_backend(q: Tensor) -> str:
    """The kernel backend for tensors like ``q``: Triton on CUDA, the tiled torch code else."""
    return "triton" if q.is_cuda else "torch"


def describe_kernel(device: torch.device | str = "cpu", fused: bool | None = None) -> str:
    """The contrastive-loss path that tensors on ``device`` take, in words (for logs).

    Args:
        device: Where the loss runs.
        fused: As for the losses: None reads ``$FASTSSL_FUSED_LOSS``.

    Returns:
        ``"blockwise-cpu"`` (tiled CPU code), ``"triton"`` (CUDA kernels) or
        ``"reference"`` (the plain formula, a materialised similarity matrix).

    Example:
        >>> describe_kernel("cpu", fused=True)
        'blockwise-cpu'
    """
    if not use_fused(fused):
        return "reference"
    return "triton" if torch.device(device).type == "cuda" else "blockwise-cpu"


def check_temperature(temperature: float, name: str = "temperature") -> None:
    """Raises a ValueError unless ``abs(temperature) >= 1e-8`` (LightlySSL's rule)."""
    if abs(temperature) < 1e-8:
        raise ValueError(f"Illegal {name}={temperature}: abs({name}) must be >= 1e-8.")


def check_pair(out0: Tensor, out1: Tensor) -> None:
    """Raises a ValueError unless ``out0`` and ``out1`` are both (batch_size, embedding_size)."""
    if out0.ndim != 2 or out0.shape != out1.shape:
        raise ValueError(
            "out0 and out1 must both have shape (batch_size, embedding_size), got "
            f"{tuple(out0.shape)} and {tuple(out1.shape)}."
        )


def _check_block(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return value


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


# ----- the tiled CPU code -------------------------------------------------------------------


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


def _lse_sum_with_grads(
    q: Tensor, k: Tensor, exclude: Tensor, inv_t: float, tile_elems: int, need_q: bool,
    need_k: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:  # fmt: skip
    """``sum_i lse_i`` and, where asked, its gradients w.r.t. ``q`` and ``k`` in one sweep.

    Each tile spans whole rows, so a row's log-sum-exp is final as soon as its tile is
    computed and the softmax can be used at once: three products per tile (the least an
    exact forward + backward needs) and one exp, instead of four products and two exps.
    A gradient nobody needs (MoCo's detached keys) costs no product.
    """
    n, m = q.shape[0], k.shape[0]
    dq = torch.zeros_like(q) if need_q else None
    dk = torch.zeros_like(k) if need_k else None
    if n == 0 or m == 0:
        total = q.new_zeros(()) if n == 0 else q.new_tensor(float("-inf"))
        return total, dq, dk
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
        if dq is None and dk is None:
            continue
        # softmax = exp(s - shift) / row_sum: divide the (b, d) operands, not the tile.
        # A row with every column excluded has row_sum 0 and no gradient (not inf * 0).
        inv_sum = torch.where(row_sum > 0, row_sum.reciprocal(), 0.0)
        if dq is not None:
            torch.mm(s, k, out=dq[r0:r1])
            dq[r0:r1].mul_(inv_sum)
        if dk is not None:
            dk.addmm_(s.T, q[r0:r1] * inv_sum)
    for grad in (dq, dk):
        if grad is not None:
            grad.mul_(inv_t)
    return total, dq, dk


# ----- custom operators: one opaque call for eager mode and for torch.compile ----------------
# Optional outputs (a gradient nobody needs) are returned as empty (0,) tensors: custom ops
# return tensors only. Autocast is switched off inside: the kernels compute in the dtype they
# are given (float32 or float64), also under bf16-mixed training.

_EMPTY = (0,)


def _or_empty(t: Tensor | None, like: Tensor) -> Tensor:
    return like.new_empty(_EMPTY) if t is None else t


@torch.library.custom_op("fastssl::lse_rows", mutates_args=())
def _lse_rows_op(
    q: Tensor, k: Tensor, exclude: Tensor, inv_t: float, block_rows: int, block_cols: int,
    backend: str, precision: str,
) -> Tensor:  # fmt: skip
    with torch.autocast(q.device.type, enabled=False), torch.no_grad():
        if backend == "triton":
            from fastssl.kernels import triton_contrastive

            return triton_contrastive.lse_forward(q, k, exclude, inv_t, precision).to(q.dtype)
        return _lse_forward(q, k, exclude, inv_t, block_rows, block_cols)


@_lse_rows_op.register_fake
def _(q: Tensor, k: Tensor, exclude: Tensor, inv_t: float, block_rows: int, block_cols: int,
      backend: str, precision: str) -> Tensor:  # fmt: skip
    return q.new_empty(q.shape[0])


@torch.library.custom_op("fastssl::lse_rows_backward", mutates_args=())
def _lse_rows_backward_op(
    q: Tensor, k: Tensor, exclude: Tensor, lse: Tensor, grad: Tensor, inv_t: float,
    block_rows: int, block_cols: int, backend: str, precision: str, need_q: bool, need_k: bool,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    with torch.autocast(q.device.type, enabled=False), torch.no_grad():
        if backend == "triton":
            from fastssl.kernels import triton_contrastive

            dq, dk = triton_contrastive.lse_backward(
                q, k, exclude, lse, grad, inv_t, precision, need_q, need_k
            )
        else:
            dq, dk = _lse_backward(
                q, k, exclude, lse, grad.to(q.dtype).contiguous(), inv_t, block_rows,
                block_cols, need_q, need_k,
            )  # fmt: skip
    return _or_empty(dq, q), _or_empty(dk, k)


@_lse_rows_backward_op.register_fake
def _(q: Tensor, k: Tensor, exclude: Tensor, lse: Tensor, grad: Tensor, inv_t: float,
      block_rows: int, block_cols: int, backend: str, precision: str, need_q: bool,
      need_k: bool) -> tuple[Tensor, Tensor]:  # fmt: skip
    return (
        q.new_empty(q.shape if need_q else _EMPTY),
        k.new_empty(k.shape if need_k else _EMPTY),
    )


def _lse_rows_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    q, k, exclude, inv_t, block_rows, block_cols, backend, precision = inputs
    ctx.save_for_backward(q, k, exclude, output)
    ctx.args = (inv_t, block_rows, block_cols, backend, precision)


def _lse_rows_backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    q, k, exclude, lse = ctx.saved_tensors
    need_q, need_k = bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1])
    dq, dk = _lse_rows_backward_op(q, k, exclude, lse, grad, *ctx.args, need_q, need_k)
    return (dq if need_q else None, dk if need_k else None, None, None, None, None, None, None)


_lse_rows_op.register_autograd(_lse_rows_backward, setup_context=_lse_rows_setup)


@torch.library.custom_op("fastssl::lse_sum", mutates_args=())
def _lse_sum_op(
    q: Tensor, k: Tensor, exclude: Tensor, inv_t: float, tile_elems: int, need_q: bool,
    need_k: bool,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    with torch.autocast(q.device.type, enabled=False), torch.no_grad():
        total, dq, dk = _lse_sum_with_grads(q, k, exclude, inv_t, tile_elems, need_q, need_k)
    return total, _or_empty(dq, q), _or_empty(dk, k)


@_lse_sum_op.register_fake
def _(q: Tensor, k: Tensor, exclude: Tensor, inv_t: float, tile_elems: int, need_q: bool,
      need_k: bool) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    return (
        q.new_empty(()),
        q.new_empty(q.shape if need_q else _EMPTY),
        k.new_empty(k.shape if need_k else _EMPTY),
    )


def _lse_sum_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    ctx.save_for_backward(output[1], output[2])
    ctx.need = (bool(inputs[5]), bool(inputs[6]))


def _lse_sum_backward(ctx: Any, grad: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
    # The sum is linear in its upstream gradient: scale the gradients of the forward sweep.
    dq, dk = ctx.saved_tensors
    gq = dq * grad if ctx.need[0] and ctx.needs_input_grad[0] else None
    gk = dk * grad if ctx.need[1] and ctx.needs_input_grad[1] else None
    return gq, gk, None, None, None, None, None


_lse_sum_op.register_autograd(_lse_sum_backward, setup_context=_lse_sum_setup)


# ----- public functions ---------------------------------------------------------------------


def _prepare(q: Tensor, k: Tensor, exclude: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Checks the arguments; float32 for half inputs (``k`` in ``q``'s dtype), contiguous."""
    _check_lse_args(q, k, exclude)
    check_temperature(temperature)
    if q.dtype not in (torch.float32, torch.float64):
        q = q.float()
    return q.contiguous(), k.to(q.dtype).contiguous()


def _check_backend(backend: str | None, q: Tensor) -> str:
    if backend is None:
        return pick_backend(q)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be None, 'torch' or 'triton', got {backend!r}.")
    return backend


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
    logits = (q @ k.to(q.dtype).T) / temperature
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
    input_precision: str = "ieee",
) -> Tensor:
    """Differentiable per-row log-sum-exp of ``q @ k.T / temperature`` without an (n, m) buffer.

    The shared primitive of NT-Xent (SimCLR, Chen et al. 2020) and DCL (Yeh et al. 2022):
    ``lse_i = log sum_{j not in exclude[i]} exp(<q_i, k_j> / temperature)``. Saves ``q``,
    ``k``, ``exclude`` and the ``(n,)`` result for backward, which recomputes the tiles:
    ``O((n + m) * d)`` memory. Half precision inputs are computed in float32.

    Args:
        q: Query rows, shape (n, d).
        k: Key rows, shape (m, d).
        exclude: Column indices left out of row ``i``'s sum, int64 of shape (n, e); ``e`` may
            be 0 (at most 2 on Triton).
        temperature: Logits are divided by it.
        block_rows: Rows per tile (torch backend).
        block_cols: Columns per tile (torch backend).
        backend: "torch" (tiled code, any device), "triton" (CUDA kernels), or None to pick
            Triton for CUDA tensors and torch otherwise.
        input_precision: Triton's ``tl.dot`` precision: "ieee" (exact float32, the
            default, equal to the CPU path to float32 rounding) or "tf32" (faster).

    Returns:
        Tensor of shape (n,), dtype of ``q`` (float32 for half inputs).

    Raises:
        ValueError: On inconsistent shapes, a zero temperature, a non-positive block size or
            an unknown backend or precision.

    Example:
        >>> q = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
        >>> lse = blockwise_lse(q, q, torch.arange(6).unsqueeze(1), 0.5, block_rows=4)
        >>> torch.allclose(lse, reference_lse(q, q, torch.arange(6).unsqueeze(1), 0.5))
        True
    """
    q, k = _prepare(q, k, exclude, temperature)
    _check_block("block_rows", block_rows)
    _check_block("block_cols", block_cols)
    chosen = _check_backend(backend, q)
    if chosen == "triton" and exclude.shape[1] > 2:
        raise ValueError(f"exclude may have at most 2 columns on Triton, got {exclude.shape[1]}.")
    if input_precision not in ("ieee", "tf32"):
        raise ValueError(f"input_precision must be 'ieee' or 'tf32', got {input_precision!r}.")
    out: Tensor = _lse_rows_op(
        q,
        k,
        exclude.contiguous(),
        1.0 / temperature,
        block_rows,
        block_cols,
        chosen,
        input_precision,
    )
    return out


def blockwise_lse_sum(
    q: Tensor,
    k: Tensor,
    exclude: Tensor,
    temperature: float,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    block_cols: int = DEFAULT_BLOCK_COLS,
    backend: str | None = None,
) -> Tensor:
    """``blockwise_lse(...).sum()``, with the gradients formed in the forward sweep.

    Takes the arguments of :func:`blockwise_lse`; a tile holds ``block_rows * block_cols``
    similarities and spans whole rows. Saves only the ``(n, d)`` and ``(m, d)`` gradients.
    On the Triton backend the per-row kernel runs and its result is summed.

    Returns:
        Scalar tensor.

    Example:
        >>> q = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
        >>> exclude = torch.arange(6).unsqueeze(1)
        >>> total = blockwise_lse_sum(q, q, exclude, 0.5)
        >>> torch.allclose(total, reference_lse(q, q, exclude, 0.5).sum())
        True
    """
    if _check_backend(backend, q) == "triton":
        return blockwise_lse(q, k, exclude, temperature, block_rows, block_cols, "triton").sum()
    q, k = _prepare(q, k, exclude, temperature)
    _check_block("block_rows", block_rows)
    _check_block("block_cols", block_cols)
    grad = torch.is_grad_enabled()
    total, _, _ = _lse_sum_op(
        q, k, exclude.contiguous(), 1.0 / temperature, block_rows * block_cols,
        grad and q.requires_grad, grad and k.requires_grad,
    )  # fmt: skip
    return total


def lse_rows(
    q: Tensor,
    k: Tensor,
    exclude: Tensor,
    temperature: float,
    *,
    fused: bool | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    block_cols: int = DEFAULT_BLOCK_COLS,
) -> Tensor:
    """Per-row log-sum-exp by the path ``fused`` picks: the kernel, or :func:`reference_lse`.

    Args:
        q: Query rows, shape (n, d).
        k: Key rows, shape (m, d).
        exclude: Column indices left out of row ``i``'s sum, int64 of shape (n, e).
        temperature: Logits are divided by it.
        fused: True/False forces the kernel/reference path; None reads ``$FASTSSL_FUSED_LOSS``.
        block_rows: Rows per tile of the CPU kernel.
        block_cols: Columns per tile of the CPU kernel.

    Returns:
        Tensor of shape (n,).

    Example:
        >>> q = torch.randn(5, 3)
        >>> lse_rows(q, q, torch.empty(5, 0, dtype=torch.long), 0.5).shape
        torch.Size([5])
    """
    if use_fused(fused):
        return blockwise_lse(q, k, exclude, temperature, block_rows, block_cols)
    check_temperature(temperature)
    return reference_lse(q, k, exclude, temperature)


def lse_sum(
    q: Tensor,
    k: Tensor,
    exclude: Tensor,
    temperature: float,
    *,
    fused: bool | None = None,
    strategy: str = "eager",
    block_rows: int = DEFAULT_BLOCK_ROWS,
    block_cols: int = DEFAULT_BLOCK_COLS,
) -> Tensor:
    """``sum_i lse_i`` by the path ``fused`` and ``strategy`` pick.

    Takes the arguments of :func:`lse_rows`, and ``strategy``: "eager" (gradients formed in
    the forward sweep, :func:`blockwise_lse_sum`) or "recompute" (:func:`blockwise_lse`).

    Returns:
        Scalar tensor.

    Raises:
        ValueError: For an unknown strategy (and the errors of :func:`blockwise_lse`).

    Example:
        >>> q = torch.randn(5, 3)
        >>> lse_sum(q, q, torch.arange(5).unsqueeze(1), 0.5).shape
        torch.Size([])
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}.")
    if use_fused(fused) and strategy == "eager":
        return blockwise_lse_sum(q, k, exclude, temperature, block_rows, block_cols)
    return lse_rows(
        q, k, exclude, temperature, fused=fused, block_rows=block_rows, block_cols=block_cols
    ).sum()
