"""Distributed helpers: every collective of fastssl lives here.

All functions work unchanged in a single process (no process group initialised): they
then behave like the identity, so a loss written with ``gather_distributed=True`` runs
the same code on one CPU and on many GPUs.

Gathering uses PyTorch's *functional* collectives, whose autograd rule is a
reduce-scatter of the incoming gradients. That makes the gather both differentiable
(each process receives the gradient that every process's loss sends to its local
rows) and traceable by ``torch.compile(fullgraph=True)``: no graph break, unlike a
custom ``autograd.Function`` wrapping ``dist.all_gather``.

Example:
    >>> import torch
    >>> from fastssl.utils import dist
    >>> x = torch.randn(4, 8, requires_grad=True)
    >>> full = dist.gather_cat(x)  # (4 * world_size, 8); x itself when not distributed
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import torch
import torch.distributed as torch_dist
from torch.autograd.function import FunctionCtx

P = ParamSpec("P")
R = TypeVar("R")


def is_distributed() -> bool:
    """Whether a default process group is initialised and has more than one process."""
    return torch_dist.is_available() and torch_dist.is_initialized() and world_size() > 1


def rank() -> int:
    """Returns the rank of the current process (0 when not distributed)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_rank()
    return 0


def world_size() -> int:
    """Returns the number of processes (1 when not distributed)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_world_size()
    return 1


def _world() -> torch_dist.ProcessGroup:
    group = torch_dist.group.WORLD
    if group is None:  # unreachable once is_distributed() is True
        raise RuntimeError("no default process group: call torch.distributed.init_process_group")
    return group


def gather_cat(input: torch.Tensor) -> torch.Tensor:
    """Concatenates ``input`` from all processes along dim 0, keeping gradients.

    Args:
        input: Tensor of shape (B, ...), the same shape on every process.

    Returns:
        Tensor of shape (B * world_size, ...) ordered by rank. The backward pass
        sums the gradients of every process for this process's rows (reduce-scatter),
        which is what full-batch training computes. Returns ``input`` itself when
        not distributed.
    """
    if not is_distributed():
        return input
    from torch.distributed import _functional_collectives as fc

    gathered = fc.all_gather_single_autograd(input.contiguous(), 0, _world())
    return fc.wait_tensor(gathered)


def gather(input: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Gathers ``input`` from all processes with gradients (LightlySSL's signature).

    Args:
        input: Tensor of shape (B, ...), the same shape on every process.

    Returns:
        A tuple of ``world_size`` tensors of shape (B, ...), ordered by rank.
    """
    if not is_distributed():
        return (input,)
    return tuple(gather_cat(input).chunk(world_size(), dim=0))


class GatherLayer(torch.autograd.Function):
    """Differentiable all-gather as an autograd function (LightlySSL's ``GatherLayer``).

    ``GatherLayer.apply(x)`` returns a tuple of ``world_size`` tensors shaped like ``x``,
    ordered by rank. In the backward pass the gradients that every process computed for
    all gathered tensors are summed over processes and each process keeps the sum for its
    own tensor, which is the gradient full-batch training would give it (the scheme of
    SimCLR's distributed implementation, also used by solo-learn).

    :func:`gather` gives the same values and gradients through PyTorch's functional
    collectives (traceable by ``torch.compile``); this class exists for code written
    against LightlySSL that calls ``GatherLayer.apply`` directly. Without a process group
    it returns ``(x,)`` and passes the gradient through.

    Example:
        >>> x = torch.randn(4, 8, requires_grad=True)
        >>> parts = GatherLayer.apply(x)  # world_size tensors of shape (4, 8)
        >>> len(parts)
        1
    """

    @staticmethod
    def forward(ctx: FunctionCtx, input: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Autograd is off inside forward: gather_cat only moves the data here, and the
        # gradient rule is the backward below.
        return tuple(gather_cat(input).chunk(world_size(), dim=0))

    @staticmethod
    def backward(ctx: FunctionCtx, *grads: torch.Tensor) -> torch.Tensor:
        # grads[r] is this process's gradient for rank r's tensor; summing the stack over
        # processes and keeping row `rank` is a reduce-scatter done as one all-reduce.
        return all_reduce_sum(torch.stack(grads))[rank()]


def all_reduce_sum(input: torch.Tensor) -> torch.Tensor:
    """Sums ``input`` over all processes without gradient (identity when not distributed).

    Args:
        input: Any tensor, the same shape on every process.

    Returns:
        A new tensor with the element-wise sum over processes.
    """
    if not is_distributed():
        return input
    from torch.distributed import _functional_collectives as fc

    return fc.wait_tensor(fc.all_reduce(input.detach(), "sum", _world()))


def all_reduce_mean(input: torch.Tensor) -> torch.Tensor:
    """Averages ``input`` over all processes without gradient.

    Args:
        input: Any tensor, the same shape on every process.

    Returns:
        A new tensor with the element-wise mean over processes.
    """
    return all_reduce_sum(input) / world_size()


def eye_rank(n: int, device: torch.device | None = None) -> torch.Tensor:
    """Returns the (n, n * world_size) boolean matrix that marks this rank's diagonal.

    Row ``i`` is True at column ``rank * n + i``: the position of a local sample among
    the gathered ones. Equals ``torch.eye(n, dtype=torch.bool)`` when not distributed.

    Args:
        n: Local batch size.
        device: Device of the result (LightlySSL 1.6 ignores it; here it is honoured).

    Returns:
        Boolean tensor of shape (n, n * world_size).

    Example:
        >>> eye_rank(2).tolist()
        [[True, False], [False, True]]
    """
    rows = torch.arange(n, device=device)
    cols = torch.arange(n * world_size(), device=device)
    return cols.unsqueeze(0) == (rows + rank() * n).unsqueeze(1)


def rank_zero_only(fn: Callable[P, R]) -> Callable[P, R | None]:
    """Decorator: runs ``fn`` on rank 0 only and returns None elsewhere.

    Example:
        >>> @rank_zero_only
        ... def hello(message: str) -> str:
        ...     return message
        >>> hello("from rank 0")
        'from rank 0'
    """

    @functools.wraps(fn)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | None:
        if rank() == 0:
            return fn(*args, **kwargs)
        return None

    return wrapped


@rank_zero_only
def print_rank_zero(*args: Any, **kwargs: Any) -> None:
    """``print`` on rank 0 only."""
    print(*args, **kwargs)
