from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.models.modules.world_model import predictor as lightly_predictor
from torch import Tensor, nn

from fastssl.models import modules
from fastssl.models.modules.world_model import predictor
from tests.models.modules.heads._oracle import (
    _randomize,
    assert_matches_lightly,
    assert_same_structure,
    build_same_seed,
)

RTOL, ATOL = 1e-4, 1e-5


def _pair(name: str, **kwargs: Any) -> tuple[nn.Module, nn.Module]:
    ours, theirs = build_same_seed(
        getattr(predictor, name), getattr(lightly_predictor, name), kwargs
    )
    assert_same_structure(ours, theirs)
    theirs_sd = theirs.state_dict()
    for key, value in ours.state_dict().items():  # same seed, same initialization
        assert torch.equal(value, theirs_sd[key]), key
    # AdaLN-Zero starts at zero: random weights make the comparison meaningful.
    _randomize(theirs, seed=1)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def _assert_same(out: Tensor, ref: Tensor, inputs: list[tuple[Tensor, Tensor]]) -> None:
    torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL)
    weight = torch.randn(out.shape)
    (out * weight).sum().backward()
    (ref * weight).sum().backward()
    for ours_in, theirs_in in inputs:
        torch.testing.assert_close(ours_in.grad, theirs_in.grad, rtol=RTOL, atol=ATOL)


def _twins(*shape: int) -> tuple[Tensor, Tensor]:
    x = torch.randn(*shape)
    return x.clone().requires_grad_(), x.clone().requires_grad_()


def test_adaln_zero() -> None:
    ours, theirs = build_same_seed(
        predictor.AdaLNZero, lightly_predictor.AdaLNZero, {"hidden_dim": 6}
    )
    assert isinstance(ours, nn.Sequential) and list(ours.state_dict()) == ["1.weight", "1.bias"]
    assert torch.count_nonzero(ours(torch.randn(2, 3, 6))) == 0
    assert_matches_lightly(ours, theirs, (2, 3, 6))
    assert modules.AdaLNZero is predictor.AdaLNZero


@pytest.mark.parametrize("conditional", [True, False])
@pytest.mark.parametrize("mask", ["none", "causal", "additive"])
def test_block_matches_lightly(conditional: bool, mask: str) -> None:
    ours, theirs = _pair(
        "PredictorBlock", hidden_dim=8, num_heads=2, mlp_ratio=2.0, dropout=0.0,
        conditional=conditional,
    )  # fmt: skip
    attn_mask = {
        "none": None,
        "causal": torch.ones(5, 5, dtype=torch.bool).tril(),
        "additive": torch.randn(5, 5),
    }[mask]
    x_ours, x_theirs = _twins(3, 5, 8)
    c_ours, c_theirs = _twins(3, 5, 8)
    cond = (c_ours, c_theirs) if conditional else (None, None)
    out = ours(x_ours, attn_mask=attn_mask, cond=cond[0])
    ref = theirs(x_theirs, attn_mask=attn_mask, cond=cond[1])
    inputs = [(x_ours, x_theirs)] + ([(c_ours, c_theirs)] if conditional else [])
    _assert_same(out, ref, inputs)
    assert ours.norm1.elementwise_affine != conditional


def test_conditional_block_is_identity_at_init_and_needs_cond() -> None:
    block = predictor.PredictorBlock(hidden_dim=8, num_heads=2, mlp_ratio=4.0, dropout=0.1)
    x = torch.randn(2, 4, 8)
    assert torch.equal(block(x, cond=torch.randn(2, 4, 8)), x)
    with pytest.raises(ValueError, match="'cond' is required"):
        block(x)


@pytest.mark.parametrize(
    ("conditional", "causal", "output_dim", "frames"),
    [(True, True, None, 4), (True, False, 5, 3), (False, True, None, 2), (False, False, 6, 4)],
)
def test_predictor_matches_lightly(
    conditional: bool, causal: bool, output_dim: int | None, frames: int
) -> None:
    ours, theirs = _pair(
        "LatentDynamicsPredictor", num_frames=4, input_dim=8, hidden_dim=16, depth=2,
        num_heads=2, output_dim=output_dim, conditional=conditional, causal=causal,
    )  # fmt: skip
    assert modules.LatentDynamicsPredictor is predictor.LatentDynamicsPredictor
    e_ours, e_theirs = _twins(3, frames, 8)
    a_ours, a_theirs = _twins(3, frames, 8)
    actions = (a_ours, a_theirs) if conditional else (None, None)
    out = ours(e_ours, action_emb=actions[0])
    ref = theirs(e_theirs, action_emb=actions[1])
    assert out.shape == (3, frames, output_dim or 8)
    inputs = [(e_ours, e_theirs)] + ([(a_ours, a_theirs)] if conditional else [])
    _assert_same(out, ref, inputs)


@pytest.mark.parametrize("causal", [True, False])
def test_causal_predictions_ignore_the_future(causal: bool) -> None:
    model, _ = _pair(
        "LatentDynamicsPredictor", num_frames=5, input_dim=8, hidden_dim=16, depth=2,
        num_heads=2, causal=causal,
    )  # fmt: skip
    emb, actions = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    changed = emb.clone()
    changed[:, 3:] += 1.0
    before, after = model(emb, action_emb=actions), model(changed, action_emb=actions)
    assert torch.allclose(before[:, :3], after[:, :3], atol=1e-6) == causal
    assert not torch.allclose(before[:, 3:], after[:, 3:])


@pytest.mark.parametrize(("context", "steps"), [(2, 1), (2, 4), (6, 3)])
@pytest.mark.parametrize("conditional", [True, False])
def test_rollout_matches_lightly(context: int, steps: int, conditional: bool) -> None:
    ours, theirs = _pair(
        "LatentDynamicsPredictor", num_frames=4, input_dim=8, hidden_dim=16, depth=1,
        num_heads=2, conditional=conditional,
    )  # fmt: skip
    ours.eval()
    theirs.eval()
    emb = torch.randn(2, context, 8)
    actions = torch.randn(2, context + steps - 1, 8) if conditional else None
    out = ours.rollout(emb, action_emb=actions, steps=steps)
    assert out.shape == (2, steps, 8)
    torch.testing.assert_close(out, theirs.rollout(emb, action_emb=actions, steps=steps))
    # The first step is the prediction from the (last num_frames frames of the) context.
    window = slice(max(0, context - 4), context)
    first = ours(emb[:, window], action_emb=None if actions is None else actions[:, window])
    torch.testing.assert_close(out[:, 0], first[:, -1])


def test_errors() -> None:
    with pytest.raises(ValueError, match="'num_frames' must be positive"):
        predictor.LatentDynamicsPredictor(
            num_frames=0, input_dim=8, hidden_dim=16, depth=1, num_heads=2
        )
    with pytest.raises(ValueError, match=r"'hidden_dim' \(10\) must be divisible"):
        predictor.LatentDynamicsPredictor(
            num_frames=2, input_dim=8, hidden_dim=10, depth=1, num_heads=4
        )
    model = predictor.LatentDynamicsPredictor(
        num_frames=3, input_dim=8, hidden_dim=16, depth=1, num_heads=2, output_dim=4
    )
    emb = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match="'action_emb' is required"):
        model(emb)
    with pytest.raises(ValueError, match=r"\(B, T, input_dim\)"):
        model(emb[0], action_emb=emb)
    with pytest.raises(ValueError, match="4 frames, but the context window is 3"):
        model(torch.randn(2, 4, 8), action_emb=torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="'action_emb' must have shape"):
        model(emb, action_emb=torch.randn(2, 2, 8))
    with pytest.raises(ValueError, match="'steps' must be >= 1"):
        model.rollout(emb, action_emb=emb, steps=0)
    with pytest.raises(ValueError, match="output_dim"):
        model.rollout(emb, action_emb=emb, steps=2)
    unconditional = predictor.LatentDynamicsPredictor(
        num_frames=3, input_dim=8, hidden_dim=16, depth=1, num_heads=2, conditional=False
    )
    with pytest.raises(ValueError, match="must be None"):
        unconditional(emb, action_emb=emb)
    with pytest.raises(ValueError, match="must cover 4 frames"):
        predictor.LatentDynamicsPredictor(
            num_frames=3, input_dim=8, hidden_dim=16, depth=1, num_heads=2
        ).rollout(emb, action_emb=emb, steps=2)
