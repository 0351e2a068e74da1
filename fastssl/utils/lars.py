"""LARS: SGD with layer-wise adaptive rate scaling (LightlySSL-compatible).

LARS (You, Gitman & Ginsburg, 2017, "Large Batch Training of Convolutional Networks",
https://arxiv.org/abs/1708.03888) rescales the update of every parameter tensor by a trust
ratio ``eta * ||w|| / (||g|| + wd * ||w|| + eps)`` so that each layer moves by a similar
relative amount, which keeps very large batches (SimCLR, BYOL, Barlow Twins) stable.

Parameters whose group has ``weight_decay == 0`` are neither decayed nor rescaled: put
biases and normalisation parameters (1-D tensors) in such a group, as SimCLR and BYOL do.

The update of one group, per parameter ``p`` with gradient ``g`` (``mu`` momentum,
``tau`` dampening, ``wd`` weight decay)::

    d = trust(p, g) * (g + wd * p)          if wd != 0 and ||p|| != 0 and ||g|| != 0
    d = g                                   otherwise
    v = d (first step),  v = mu * v + (1 - tau) * d (later steps)
    d = d + mu * v (Nesterov)  or  d = v
    p = p - lr * d

The ratio is computed on the device for all tensors of a group at once, with no
host synchronisation (the reference implementation compares norms in Python, one
synchronisation per tensor per step).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer


def _check_non_negative(name: str, value: float) -> None:
    if not value >= 0.0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0, got {value!r}.")


class LARS(Optimizer):
    """SGD with momentum and LARS scaling (You et al., 2017, https://arxiv.org/abs/1708.03888).

    Same arguments, update rule and state (``momentum_buffer``) as LightlySSL's ``LARS``:
    momentum follows PyTorch's SGD convention, and parameters with zero weight decay are
    excluded from the layer-wise scaling.

    Args:
        params: Parameters to optimise, or dicts defining parameter groups.
        lr: Learning rate.
        momentum: Momentum factor.
        dampening: Dampening of the momentum.
        weight_decay: Weight decay (L2 penalty); 0 also disables LARS scaling for the group.
        nesterov: Whether to use Nesterov momentum (needs momentum > 0 and no dampening).
        trust_coefficient: LARS trust coefficient ``eta``.
        eps: Added to the denominator of the trust ratio.
        foreach: Whether to update the tensors of a group with batched ``torch._foreach_*``
            kernels. ``None`` picks them when all parameters live on an accelerator.

    Example:
        >>> model = torch.nn.Linear(10, 1)
        >>> decay = [p for p in model.parameters() if p.ndim > 1]
        >>> no_decay = [p for p in model.parameters() if p.ndim <= 1]
        >>> optimizer = LARS(
        ...     [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
        ...     lr=0.1, momentum=0.9, weight_decay=1e-6,
        ... )
        >>> model(torch.randn(4, 10)).square().mean().backward()
        >>> optimizer.step()
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
        *,
        foreach: bool | None = None,
    ) -> None:
        _check_non_negative("lr", lr)
        _check_non_negative("momentum", momentum)
        _check_non_negative("weight_decay", weight_decay)
        _check_non_negative("eps", eps)
        if not trust_coefficient > 0.0:
            raise ValueError(f"trust_coefficient must be > 0, got {trust_coefficient!r}.")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                "nesterov=True needs momentum > 0 and dampening == 0, got "
                f"momentum={momentum!r} and dampening={dampening!r}."
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "trust_coefficient": trust_coefficient,
            "eps": eps,
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("foreach", None)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Performs one optimisation step.

        Args:
            closure: Optional function that re-evaluates the model and returns the loss.

        Returns:
            The loss returned by ``closure``, if given.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("LARS does not support sparse gradients.")
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.device.type != "cpu" for p in params)
            if foreach:
                # Batched kernels need one device and dtype per call.
                buckets: dict[tuple[torch.device, torch.dtype], list[Tensor]] = defaultdict(list)
                for p in params:
                    buckets[(p.device, p.dtype)].append(p)
                for bucket in buckets.values():
                    self._update_foreach(bucket, group)
            else:
                for p in params:
                    self._update_single(p, group)
        return loss

    @staticmethod
    def _trust_scale(
        p_norm: Tensor, g_norm: Tensor, group: dict[str, Any]
    ) -> tuple[Tensor, Tensor]:
        """(scale, decay) with ``d = scale * (g + decay * p)``, computed without a sync."""
        weight_decay = group["weight_decay"]
        adapt = (p_norm != 0) & (g_norm != 0)
        ratio = (
            p_norm / (g_norm + p_norm * weight_decay + group["eps"]) * group["trust_coefficient"]
        )
        scale = torch.where(adapt, ratio, torch.ones_like(ratio))
        decay = torch.where(adapt, torch.full_like(ratio, weight_decay), torch.zeros_like(ratio))
        return scale, decay

    def _update_single(self, p: Tensor, group: dict[str, Any]) -> None:
        grad = p.grad
        assert grad is not None
        d_p = grad
        if group["weight_decay"] != 0:
            scale, decay = self._trust_scale(p.norm(), grad.norm(), group)
            d_p = (grad + decay * p) * scale
        momentum = group["momentum"]
        if momentum != 0:
            state = self.state[p]
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d_p.detach().clone()
            else:
                buf.mul_(momentum).add_(d_p, alpha=1 - group["dampening"])
            d_p = d_p.add(buf, alpha=momentum) if group["nesterov"] else buf
        p.add_(d_p, alpha=-group["lr"])

    def _update_foreach(self, params: list[Tensor], group: dict[str, Any]) -> None:
        grads: list[Tensor] = [p.grad for p in params]  # type: ignore[misc]
        d_ps: list[Tensor] = grads
        if group["weight_decay"] != 0:
            p_norms = torch.stack(torch._foreach_norm(params))
            g_norms = torch.stack(torch._foreach_norm(grads))
            scale, decay = self._trust_scale(p_norms, g_norms, group)
            d_ps = list(torch._foreach_add(grads, torch._foreach_mul(params, list(decay.unbind()))))
            torch._foreach_mul_(d_ps, list(scale.unbind()))
        momentum = group["momentum"]
        if momentum != 0:
            old_bufs: list[Tensor] = []
            old_d_ps: list[Tensor] = []
            bufs: list[Tensor] = []
            for p, d_p in zip(params, d_ps, strict=True):
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = d_p.detach().clone()
                else:
                    old_bufs.append(buf)
                    old_d_ps.append(d_p)
                bufs.append(buf)
            if old_bufs:
                torch._foreach_mul_(old_bufs, momentum)
                torch._foreach_add_(old_bufs, old_d_ps, alpha=1 - group["dampening"])
            if group["nesterov"]:
                d_ps = list(torch._foreach_add(d_ps, bufs, alpha=momentum))
            else:
                d_ps = bufs
        torch._foreach_add_(params, d_ps, alpha=-group["lr"])
