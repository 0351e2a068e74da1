from __future__ import annotations

import inspect

import pytest
import torch
from lightly.models.modules import heads as lightly_heads
from torch import nn

from fastssl.models.modules import heads
from fastssl.models.modules.heads.base import ProjectionHead, WeightNormLinear, mlp_blocks
from tests.models.modules.heads._oracle import assert_matches_lightly, build_same_seed


def _lightly_head_names() -> list[str]:
    return sorted(
        name
        for name, obj in vars(lightly_heads).items()
        if inspect.isclass(obj)
        and issubclass(obj, nn.Module)
        and obj.__module__ == lightly_heads.__name__
    )


@pytest.mark.parametrize("name", _lightly_head_names())
def test_every_lightly_head_is_exported_with_the_same_signature(name: str) -> None:
    from fastssl.models.modules.heads import __all__ as exported

    assert name in exported
    ours = getattr(heads, name)
    theirs = getattr(lightly_heads, name)
    ours_sig = inspect.signature(ours.__init__).parameters
    theirs_sig = inspect.signature(theirs.__init__).parameters
    assert list(ours_sig) == list(theirs_sig)
    for arg, param in theirs_sig.items():
        assert ours_sig[arg].default == param.default, arg


def test_aim_head_is_exported() -> None:
    assert heads.AIMPredictionHead.__name__ == "AIMPredictionHead"
    assert "AIMPredictionHeadBlock" in heads.__all__


def _blocks_plain() -> list:
    return [(6, 8, nn.BatchNorm1d(8), nn.ReLU()), (8, 4, None, None)]


def _blocks_mixed() -> list:
    return [
        (6, 8, nn.LayerNorm(8), nn.GELU(), True),
        (8, 8, None, nn.Tanh()),
        (8, 8, nn.BatchNorm1d(8), None, True),
        (8, 3, None, None, False),
    ]


@pytest.mark.parametrize("make_blocks", [_blocks_plain, _blocks_mixed])
def test_projection_head_matches_lightly(make_blocks) -> None:  # type: ignore[no-untyped-def]
    ours, theirs = build_same_seed(
        lambda: ProjectionHead(make_blocks()),
        lambda: lightly_heads.ProjectionHead(make_blocks()),
        {},
    )
    assert_matches_lightly(ours, theirs, (5, 6))


def test_projection_head_equals_the_formula() -> None:
    torch.manual_seed(0)
    head = ProjectionHead([(6, 8, nn.BatchNorm1d(8), nn.ReLU()), (8, 4, None, None)])
    x = torch.randn(10, 6)
    lin1, bn, _, lin2 = head.layers
    assert lin1.bias is None  # batch norm follows: no bias
    assert lin2.bias is not None
    h = x @ lin1.weight.t()
    h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias
    expected = h.clamp_min(0) @ lin2.weight.t() + lin2.bias
    torch.testing.assert_close(head(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("blocks", "match"),
    [
        ([(4, 4, None)], r"blocks\[0\] must be \(in_features, out_features, norm, activation"),
        ([(4, 4, None, None), (0, 2, None, None)], r"blocks\[1\] in_features .* got 0"),
        ([(4, -3, None, None)], r"blocks\[0\] out_features must be a positive integer, got -3"),
    ],
)
def test_projection_head_rejects_bad_blocks(blocks: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ProjectionHead(blocks)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_layers": 1}, r"num_layers must be an integer >= 2, got 1"),
        ({"input_dim": 0}, r"input_dim must be a positive integer, got 0"),
        ({"hidden_dim": 2.5}, r"hidden_dim must be a positive integer, got 2.5"),
    ],
)
def test_mlp_blocks_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"input_dim": 4, "hidden_dim": 4, "output_dim": 4} | kwargs
    with pytest.raises(ValueError, match=match):
        mlp_blocks(**args)


@pytest.mark.parametrize("bias", [False, True])
def test_weight_norm_linear_matches_torch_weight_norm(bias: bool) -> None:
    torch.manual_seed(0)
    ours = WeightNormLinear(5, 7, bias=bias)
    torch.manual_seed(0)
    with pytest.warns(FutureWarning):
        theirs = nn.utils.weight_norm(nn.Linear(5, 7, bias=bias))
    theirs.weight_g.data.fill_(1)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    with torch.no_grad():
        theirs.weight_g.mul_(torch.rand(7, 1) + 0.5)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(3, 5)
    out_ours, out_theirs = ours(x), theirs(x)
    torch.testing.assert_close(out_ours, out_theirs)
    out_ours.square().sum().backward()
    out_theirs.square().sum().backward()
    for name in ("weight_g", "weight_v"):
        torch.testing.assert_close(getattr(ours, name).grad, getattr(theirs, name).grad)


def test_weight_norm_linear_formula_and_unit_rows() -> None:
    layer = WeightNormLinear(4, 6)
    assert layer.bias is None
    assert torch.equal(layer.weight_g, torch.ones(6, 1))
    torch.testing.assert_close(layer.weight.norm(dim=1), torch.ones(6))
    with torch.no_grad():
        layer.weight_g.copy_(torch.arange(1.0, 7.0).unsqueeze(1))
    v = layer.weight_v
    expected = torch.arange(1.0, 7.0).unsqueeze(1) * v / v.norm(dim=1, keepdim=True)
    x = torch.randn(2, 4)
    torch.testing.assert_close(layer(x), x @ expected.t())
    assert "in_features=4, out_features=6, bias=False" in repr(layer)
