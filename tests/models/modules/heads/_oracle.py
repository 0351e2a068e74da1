"""Shared checks of fastssl heads against LightlySSL 1.6 (the oracle)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

RTOL = 1e-4
ATOL = 1e-6


def build_same_seed(
    ours_cls: Callable[..., nn.Module],
    theirs_cls: Callable[..., nn.Module],
    kwargs: dict[str, Any],
    seed: int = 0,
) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    ours = ours_cls(**kwargs)
    torch.manual_seed(seed)
    theirs = theirs_cls(**kwargs)
    return ours, theirs


def leaf_signature(module: nn.Module) -> list[tuple[str, str]]:
    """(name, repr) of every leaf module; a weight-normed linear reads as a plain linear."""
    out = []
    for name, child in module.named_modules():
        if list(child.children()):
            continue
        text = repr(child)
        if type(child).__name__ == "WeightNormLinear":
            text = text.replace("WeightNormLinear", "Linear")
        out.append((name, text))
    return out


def assert_same_structure(ours: nn.Module, theirs: nn.Module) -> None:
    """Same parameter/buffer names, shapes, dtypes, requires_grad flags and leaf modules."""
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert sorted(ours_sd) == sorted(theirs_sd)
    for key, value in theirs_sd.items():
        assert ours_sd[key].shape == value.shape, key
        assert ours_sd[key].dtype == value.dtype, key
    ours_grad = {n: p.requires_grad for n, p in ours.named_parameters()}
    theirs_grad = {n: p.requires_grad for n, p in theirs.named_parameters()}
    assert ours_grad == theirs_grad
    assert leaf_signature(ours) == leaf_signature(theirs)


def _randomize(module: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            # Variances must stay positive.
            tensor.copy_(noise.abs() + 0.5 if name.endswith("running_var") else noise * 0.3)


def _outputs(out: Tensor | list[Tensor]) -> list[Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def assert_matches_lightly(
    ours: nn.Module,
    theirs: nn.Module,
    x_shape: tuple[int, ...],
    forward_kwargs: dict[str, Any] | None = None,
    check_init: bool = True,
) -> None:
    """Structure, same-seed init, strict state_dict exchange, train/eval outputs and grads."""
    forward_kwargs = forward_kwargs or {}
    assert_same_structure(ours, theirs)
    if check_init:
        # Built under the same seed: our initialisation draws the same numbers as lightly's.
        theirs_sd = theirs.state_dict()
        for key, value in ours.state_dict().items():
            assert torch.equal(value, theirs_sd[key]), f"init differs for {key}"

    _randomize(theirs, seed=1)
    ours.load_state_dict(theirs.state_dict(), strict=True)

    generator = torch.Generator().manual_seed(2)
    for train in (True, False):
        ours.train(train)
        theirs.train(train)
        x = torch.randn(x_shape, generator=generator)
        x_ours = x.clone().requires_grad_()
        x_theirs = x.clone().requires_grad_()
        out_ours = _outputs(ours(x_ours, **forward_kwargs))
        out_theirs = _outputs(theirs(x_theirs, **forward_kwargs))
        assert len(out_ours) == len(out_theirs)
        loss_ours = torch.zeros(())
        loss_theirs = torch.zeros(())
        for a, b in zip(out_ours, out_theirs, strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)
            weight = torch.randn(a.shape, generator=generator)
            loss_ours = loss_ours + (a * weight).sum()
            loss_theirs = loss_theirs + (b * weight).sum()
        ours.zero_grad(set_to_none=True)
        theirs.zero_grad(set_to_none=True)
        loss_ours.backward()
        loss_theirs.backward()
        torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=RTOL, atol=ATOL)
        theirs_params = dict(theirs.named_parameters())
        for name, param in ours.named_parameters():
            other = theirs_params[name].grad
            if other is None:
                assert param.grad is None, name
            else:
                torch.testing.assert_close(param.grad, other, rtol=RTOL, atol=ATOL)
        # Batch-norm running statistics moved the same way in train mode.
        theirs_sd = theirs.state_dict()
        for key, value in ours.state_dict().items():
            torch.testing.assert_close(value, theirs_sd[key], rtol=RTOL, atol=ATOL)

    # And back: lightly accepts our checkpoints.
    theirs.load_state_dict(ours.state_dict(), strict=True)


def assert_default_structure(
    ours_cls: Callable[..., nn.Module], theirs_cls: Callable[..., nn.Module], **kwargs: Any
) -> None:
    """Default arguments give lightly's architecture (built on the meta device: no memory)."""
    with torch.device("meta"):
        ours = ours_cls(**kwargs)
        theirs = theirs_cls(**kwargs)
    assert_same_structure(ours, theirs)
