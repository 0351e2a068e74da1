from __future__ import annotations

import re

import pytest
import torch
from lightly.models.modules import center as lightly_center

from fastssl.models.modules.center import (
    CENTER_MODE_TO_FUNCTION,
    Center,
    center_mean,
    center_momentum,
    get_center_function,
)


@pytest.mark.parametrize(
    ("size", "shape"),
    [((1, 5), (4, 5)), ((1, 1, 5), (3, 4, 5)), ((1, 3, 1), (2, 3, 6))],
)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_matches_lightly_over_updates(
    size: tuple[int, ...], shape: tuple[int, ...], momentum: float
) -> None:
    ours = Center(size=size, momentum=momentum)
    theirs = lightly_center.Center(size=size, momentum=momentum)
    assert ours.dim == theirs.dim
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(shape, generator=g)
        ours.update(x)
        theirs.update(x)
        torch.testing.assert_close(ours.value, theirs.value)
        torch.testing.assert_close(ours._center_mean(x), theirs._center_mean(x))
    assert ours.value.shape == size


def test_update_is_the_momentum_formula() -> None:
    center = Center(size=(1, 1, 3), momentum=0.75)
    first = torch.arange(12.0).reshape(2, 2, 3)
    center.update(first)
    expected = 0.25 * torch.tensor([4.5, 5.5, 6.5])
    torch.testing.assert_close(center.value.reshape(-1), expected)
    second = torch.ones(5, 1, 3)
    center.update(second)
    torch.testing.assert_close(center.value.reshape(-1), 0.75 * expected + 0.25)


def test_functions_match_formulas_and_lightly() -> None:
    x = torch.randn(3, 4, 5)
    assert torch.equal(center_mean(x, dim=(0, 1)), x.mean(dim=(0, 1), keepdim=True))
    torch.testing.assert_close(
        center_mean(x, dim=(0, 1)), lightly_center.center_mean(x, dim=(0, 1))
    )
    c, b = torch.randn(5), torch.randn(5)
    torch.testing.assert_close(center_momentum(c, b, 0.3), 0.3 * c + 0.7 * b)
    torch.testing.assert_close(
        center_momentum(c, b, 0.3), lightly_center.center_momentum(c, b, 0.3)
    )
    assert sorted(CENTER_MODE_TO_FUNCTION) == sorted(lightly_center.CENTER_MODE_TO_FUNCTION)
    assert get_center_function("mean") is center_mean


def test_no_gradient_and_buffer_in_state_dict() -> None:
    center = Center(size=(1, 4))
    x = torch.randn(2, 4, requires_grad=True)
    center.update(x)
    assert not center.value.requires_grad
    assert set(center.state_dict()) == {"center"}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"size": (1, 4), "mode": "max"},
            ValueError,
            "Unknown mode 'max'. Valid modes are ['mean']",
        ),
        (
            {"size": (2, 4)},
            ValueError,
            "at least one dimension equal to 1 (the dimensions to average over), got size=(2, 4)",
        ),
    ],
)
def test_bad_arguments_raise(kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        Center(**kwargs)


@pytest.mark.parametrize(
    ("size", "shape"),
    [
        ((1, 1, 4), (5, 4)),  # 2-D features for a 3-D center: mean over all of x
        ((1, 4), (3, 2, 4)),  # more dims than size: the center takes the broadcast shape
        ((1, 4), (4,)),  # 1-D features: mean over dim 0 only
        ((1, 4), (3, 1, 4)),
        ((1, 1, 4), (2, 1, 3, 4)),  # the center takes the broadcast shape (1, 1, 3, 4)
    ],
)
def test_update_accepts_what_lightly_accepts(size: tuple[int, ...], shape: tuple[int, ...]) -> None:
    ours = Center(size=size, momentum=0.6)
    theirs = lightly_center.Center(size=size, momentum=0.6)
    g = torch.Generator().manual_seed(3)
    for _ in range(2):
        x = torch.randn(shape, generator=g)
        ours.update(x)
        theirs.update(x)
        assert ours.value.shape == theirs.value.shape
        torch.testing.assert_close(ours.value, theirs.value)
    assert set(ours.state_dict()) == {"center"}


def test_update_2d_features_for_3d_center_is_the_global_mean() -> None:
    center = Center(size=(1, 1, 3), momentum=0.5)
    x = torch.tensor([[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]])
    center.update(x)
    torch.testing.assert_close(center.value, torch.full((1, 1, 3), 0.5 * 4.0))


def test_update_with_float64_features_follows_lightly_dtype() -> None:
    ours, theirs = Center(size=(1, 3)), lightly_center.Center(size=(1, 3))
    x = torch.randn(4, 3, dtype=torch.float64)
    ours.update(x)
    theirs.update(x)
    assert ours.value.dtype == theirs.value.dtype == torch.float64
    torch.testing.assert_close(ours.value, theirs.value)


@pytest.mark.parametrize(
    ("size", "shape", "message"),
    [
        ((1, 1, 4), (4,), "x needs at least 2 dimensions, got shape (4,)"),
        ((1, 4), (2, 3), "shape (1, 3), which does not broadcast against the center of shape"),
    ],
)
def test_update_with_incompatible_x_raises(
    size: tuple[int, ...], shape: tuple[int, ...], message: str
) -> None:
    center = Center(size=size)
    with pytest.raises(ValueError, match=re.escape(message)):
        center.update(torch.randn(shape))
    # lightly fails on the same inputs too (with torch's own errors).
    with pytest.raises((IndexError, RuntimeError)):
        lightly_center.Center(size=size).update(torch.randn(shape))


@pytest.mark.compile
def test_compile_fullgraph_update() -> None:
    torch._dynamo.reset()
    eager, compiled_center = Center(size=(1, 6)), Center(size=(1, 6))

    def step(module: Center, x: torch.Tensor) -> torch.Tensor:
        module.update(x)
        return module.value * 2

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    for seed in range(2):
        x = torch.randn(3, 6, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(compiled(compiled_center, x), step(eager, x))
    torch.testing.assert_close(compiled_center.value, eager.value)
