from __future__ import annotations

import sys

import pytest
import torch
from lightly.models.modules.capi_predictor_timm import CAPIPredictorTIMM as LightlyPredictor
from timm.layers import apply_rot_embed_cat

from fastssl.models import modules
from fastssl.models.modules.capi_predictor_timm import CAPIPredictorTIMM, _rotate
from tests.models.modules.heads._oracle import _randomize


def _pair(**kwargs: object) -> tuple[CAPIPredictorTIMM, LightlyPredictor]:
    torch.manual_seed(0)
    ours = CAPIPredictorTIMM(**kwargs)  # type: ignore[arg-type]
    torch.manual_seed(0)
    theirs = LightlyPredictor(**kwargs)  # type: ignore[arg-type]
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    for key, value in theirs_sd.items():  # same seed, same initialization
        assert torch.equal(ours_sd[key], value), key
    return ours, theirs


def test_rotation_matches_timm() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 8, generator=generator)
    rope = torch.randn(2, 1, 5, 16, generator=generator)
    torch.testing.assert_close(_rotate(x, rope), apply_rot_embed_cat(x, rope))
    # A rotation keeps the norm of every pair when sin^2 + cos^2 = 1.
    angles = torch.rand(5, 4, generator=generator).repeat_interleave(2, dim=-1)
    unit = torch.cat([angles.sin(), angles.cos()], dim=-1)
    rotated = _rotate(x, unit)
    torch.testing.assert_close(
        rotated.unflatten(-1, (4, 2)).norm(dim=-1), x.unflatten(-1, (4, 2)).norm(dim=-1)
    )


@pytest.mark.parametrize(
    ("grid", "depth", "heads", "mlp_ratio"),
    [(4, 2, 2, 4.0), ((3, 5), 1, 4, 2.0), (6, 0, 1, 4.0)],
)
def test_matches_lightly(
    grid: int | tuple[int, int], depth: int, heads: int, mlp_ratio: float
) -> None:
    ours, theirs = _pair(
        embed_dim=32, grid_size=grid, depth=depth, num_heads=heads, mlp_ratio=mlp_ratio
    )
    assert modules.CAPIPredictorTIMM is CAPIPredictorTIMM
    _randomize(theirs, seed=1)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    num_patches = grid * grid if isinstance(grid, int) else grid[0] * grid[1]
    generator = torch.Generator().manual_seed(2)
    order = torch.stack([torch.randperm(num_patches, generator=generator) for _ in range(3)])
    context_pos, query_pos = order[:, :5], order[:, 5:]
    context = torch.randn(3, 5, 32, generator=generator)
    c_ours, c_theirs = context.clone().requires_grad_(), context.clone().requires_grad_()
    out, ref = ours(c_ours, context_pos, query_pos), theirs(c_theirs, context_pos, query_pos)
    assert out.shape == (3, num_patches - 5, 32)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    weight = torch.randn(out.shape, generator=generator)
    (out * weight).sum().backward()
    (ref * weight).sum().backward()
    if depth:
        torch.testing.assert_close(c_ours.grad, c_theirs.grad, rtol=1e-4, atol=1e-5)
    grads = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        torch.testing.assert_close(param.grad, grads[name].grad, rtol=1e-4, atol=1e-5)


def test_positions_matter_and_order_of_context_does_not() -> None:
    predictor = CAPIPredictorTIMM(embed_dim=16, grid_size=4, depth=1, num_heads=1)
    context, context_pos = torch.randn(1, 4, 16), torch.tensor([[0, 1, 2, 3]])
    queries = torch.tensor([[5, 10]])
    out = predictor(context, context_pos, queries)
    # Permuting the (token, position) pairs of the context changes nothing ...
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(predictor(context[:, perm], context_pos[:, perm], queries), out)
    # ... while the same tokens at other positions give other predictions.
    assert not torch.allclose(predictor(context, context_pos + 4, queries), out)
    assert not torch.allclose(out[:, 0], out[:, 1])


def test_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"'embed_dim' \(30\) must be divisible by 'num_heads'"):
        CAPIPredictorTIMM(embed_dim=30, grid_size=4, num_heads=4)
    with pytest.raises(ValueError, match=r"head dimension .* \(6\) must be a multiple of 4"):
        CAPIPredictorTIMM(embed_dim=12, grid_size=4, num_heads=2)
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match="pip install timm"):
        CAPIPredictorTIMM(embed_dim=32, grid_size=4)
