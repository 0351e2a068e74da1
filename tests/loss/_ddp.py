"""Shared check that a loss with ``gather_distributed`` trains like one full batch.

``ddp_worker`` runs inside each gloo process (see ``tests/_distributed.py``): a seeded
``nn.Linear`` embeds this rank's half of a fixed global batch, the loss is computed with
``gather_distributed=True`` and backpropagated. ``full_batch`` runs the same model on the
whole batch in one process with ``gather_distributed=False``. DDP averages gradients over
ranks, so the rank-mean of the worker gradients must equal the full-batch gradients.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fastssl.utils import dist

IN_DIM = 6


def _data(global_batch: int, dim_in: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    return (
        torch.randn(steps, global_batch, dim_in, generator=g),
        torch.randn(steps, global_batch, dim_in, generator=g),
    )


def _state(loss_fn: nn.Module) -> torch.Tensor | None:
    bank = getattr(loss_fn, "memory_bank", None)
    if bank is not None and bank.size[0] > 0:
        return bank.bank.clone()
    c = getattr(loss_fn, "C", None)
    return None if c is None else c.clone()


def run_steps(
    loss_cls: type[nn.Module],
    kwargs: dict[str, Any],
    global_batch: int,
    dim: int,
    steps: int,
    rows: slice,
    compile_loss: bool = False,
) -> dict[str, Any]:
    """Runs ``steps`` forward/backward passes on ``rows`` of the global batch."""
    torch.manual_seed(0)
    model = nn.Linear(IN_DIM, dim)
    loss_fn = loss_cls(**kwargs)
    call = torch.compile(loss_fn, backend="aot_eager", fullgraph=True) if compile_loss else loss_fn
    x0, x1 = _data(global_batch, IN_DIM, steps)
    losses, grads = [], []
    for step in range(steps):
        model.zero_grad()
        loss = call(model(x0[step, rows]), model(x1[step, rows]))
        loss.backward()
        losses.append(loss.detach().clone())
        grads.append([p.grad.clone() for p in model.parameters()])
    return {"losses": losses, "grads": grads, "state": _state(loss_fn)}


def ddp_worker(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each case: loss_cls, kwargs (gather_distributed added), global_batch, dim, steps."""
    results = []
    for case in cases:
        if case.get("compile_loss"):
            torch._dynamo.reset()
        local = case["global_batch"] // dist.world_size()
        rows = slice(dist.rank() * local, (dist.rank() + 1) * local)
        kwargs = {**case["kwargs"], "gather_distributed": True}
        results.append(
            run_steps(
                case["loss_cls"],
                kwargs,
                case["global_batch"],
                case["dim"],
                case["steps"],
                rows,
                case.get("compile_loss", False),
            )
        )
    return results


def full_batch(case: dict[str, Any]) -> dict[str, Any]:
    """The same case in one process on the whole batch, without gathering."""
    kwargs = {**case["kwargs"], "gather_distributed": False}
    return run_steps(
        case["loss_cls"], kwargs, case["global_batch"], case["dim"], case["steps"], slice(None)
    )


def assert_ddp_matches_full_batch(case: dict[str, Any], per_rank: list[dict[str, Any]]) -> None:
    """Rank-mean losses and gradients (DDP's all-reduce) equal the full-batch ones."""
    full = full_batch(case)
    for step in range(case["steps"]):
        mean_loss = torch.stack([r["losses"][step] for r in per_rank]).mean()
        torch.testing.assert_close(mean_loss, full["losses"][step], rtol=1e-4, atol=1e-5)
        for i, full_grad in enumerate(full["grads"][step]):
            mean_grad = torch.stack([r["grads"][step][i] for r in per_rank]).mean(dim=0)
            torch.testing.assert_close(mean_grad, full_grad, rtol=1e-4, atol=1e-5)
    if full["state"] is not None:
        for r in per_rank:
            torch.testing.assert_close(r["state"], full["state"], rtol=1e-5, atol=1e-6)
