from __future__ import annotations

import sys
import warnings

import pytest
import torch
from lightly.models.modules.ijepa_timm import IJEPAPredictorTIMM as LightlyPredictor
from torch import Tensor

from fastssl.models import modules
from fastssl.models.modules.ijepa_timm import IJEPAPredictorTIMM
from fastssl.models.modules.masked_vision_transformer_decoder_timm import (
    MaskedVisionTransformerDecoderTIMM,
)
from fastssl.models.utils import get_2d_sine_cosine_positional_embedding
from tests.models.modules.heads._oracle import _randomize

ARGS = {"num_patches": 16, "depth": 2, "mlp_dim": 24, "predictor_embed_dim": 16, "num_heads": 2}


def _keep(batch: int, num: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(16, generator=generator)[:num] for _ in range(batch)])


def _pair(**kwargs: object) -> tuple[IJEPAPredictorTIMM, LightlyPredictor]:
    torch.manual_seed(0)
    ours = IJEPAPredictorTIMM(**{**ARGS, **kwargs})  # type: ignore[arg-type]
    torch.manual_seed(0)
    theirs = LightlyPredictor(**{**ARGS, **kwargs})  # type: ignore[arg-type]
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    for key, value in theirs_sd.items():  # same seed, same initialization
        torch.testing.assert_close(ours_sd[key], value, rtol=0, atol=1e-6, msg=key)
    return ours, theirs


def test_initialization() -> None:
    ours, _ = _pair()
    assert isinstance(ours.decoder, MaskedVisionTransformerDecoderTIMM)
    assert ours.decoder.num_prefix_tokens == 0
    assert torch.equal(ours.decoder.mask_token, torch.zeros(1, 1, 16))
    table = torch.from_numpy(get_2d_sine_cosine_positional_embedding(16, 4, cls_token=False))
    torch.testing.assert_close(ours.decoder.pos_embed[0], table.float())
    assert not ours.decoder.pos_embed.requires_grad
    assert modules.IJEPAPredictorTIMM is IJEPAPredictorTIMM


@pytest.mark.parametrize(("num_context", "num_target"), [(1, 1), (1, 4), (2, 3)])
@pytest.mark.parametrize("as_list", [False, True])
def test_matches_lightly(num_context: int, num_target: int, as_list: bool) -> None:
    ours, theirs = _pair()
    _randomize(theirs, seed=1)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    batch = 3
    masks_x: Tensor | list[Tensor] = [_keep(batch, 6, s) for s in range(num_context)]
    masks: Tensor | list[Tensor] = [_keep(batch, 4, 10 + s) for s in range(num_target)]
    if not as_list and num_context == 1 and num_target == 1:
        masks_x, masks = masks_x[0], masks[0]
    x = torch.randn(num_context * batch, 6, 24)
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, ref = ours(x_ours, masks_x, masks), theirs(x_theirs, masks_x, masks)
    assert out.shape == (num_target * num_context * batch, 4, 24)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    weight = torch.randn(out.shape)
    (out * weight).sum().backward()
    (ref * weight).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-4, atol=1e-5)
    grads = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, grads[name].grad, rtol=1e-4, atol=1e-5)
    theirs.load_state_dict(ours.state_dict(), strict=True)


def test_queries_at_the_same_position_get_the_same_prediction() -> None:
    """The target queries carry only the mask token and their position: two targets at the
    same position get the same prediction."""
    ours, _ = _pair(depth=1)
    x = torch.randn(2, 5, 24)
    target = torch.tensor([[3, 3], [7, 7]])
    out = ours(x, _keep(2, 5, 0), target)
    torch.testing.assert_close(out[:, 0], out[:, 1])
    with pytest.raises(ValueError, match="without mask indices"):
        ours(x, _keep(2, 5, 0), None)  # type: ignore[arg-type]


def test_legacy_checkpoint_names_are_migrated() -> None:
    ours, _ = _pair()
    _randomize(ours, seed=3)
    renames = {
        "decoder.pos_embed": "predictor_pos_embed",
        "decoder.mask_token": "mask_token",
        "decoder.blocks.": "predictor_blocks.",
        "decoder.norm.": "predictor_norm.",
    }
    legacy = {}
    for key, value in ours.state_dict().items():
        for new, old in renames.items():
            if key == new or (new.endswith(".") and key.startswith(new)):
                key = old + key[len(new) :]
                break
        legacy[key] = value
    assert "predictor_blocks.0.attn.qkv.weight" in legacy and "mask_token" in legacy
    fresh, _ = _pair()
    with pytest.warns(DeprecationWarning, match="old parameter names"):
        fresh.load_state_dict(legacy, strict=True)
    for key, value in ours.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    # Nested under a prefix as well, and current names load silently.
    wrapper = torch.nn.Sequential(_pair()[0])
    with pytest.warns(DeprecationWarning):
        wrapper.load_state_dict({f"0.{k}": v for k, v in legacy.items()}, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.load_state_dict(ours.state_dict(), strict=True)


def test_requires_timm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match="pip install timm"):
        IJEPAPredictorTIMM(**ARGS)  # type: ignore[arg-type]
