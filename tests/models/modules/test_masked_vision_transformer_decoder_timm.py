from __future__ import annotations

import pytest
import torch
from lightly.models.modules.masked_vision_transformer_decoder_timm import (
    MaskedVisionTransformerDecoderTIMM as LightlyDecoder,
)
from torch import Tensor

from fastssl.models.modules.masked_vision_transformer_decoder import (
    MaskedVisionTransformerDecoder,
)
from fastssl.models.modules.masked_vision_transformer_decoder_timm import (
    MaskedVisionTransformerDecoderTIMM,
)

ARGS = {"num_patches": 16, "embed_dim": 32, "depth": 2, "num_heads": 2}


def _pair(**kwargs: object) -> tuple[MaskedVisionTransformerDecoderTIMM, LightlyDecoder]:
    torch.manual_seed(0)
    ours = MaskedVisionTransformerDecoderTIMM(**{**ARGS, **kwargs})  # type: ignore[arg-type]
    theirs = LightlyDecoder(**{**ARGS, **kwargs})  # type: ignore[arg-type]
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), theirs.eval()


@pytest.mark.parametrize("prefix", [0, 1, 2])
@pytest.mark.parametrize("case", ["none", "idx_mask", "mask", "idx_keep"])
def test_matches_lightly(prefix: int, case: str) -> None:
    ours, theirs = _pair(num_prefix_tokens=prefix)
    seq = 16 + prefix
    assert ours.sequence_length == seq
    x = torch.randn(3, seq, 32)
    idx = torch.stack([torch.randperm(seq)[:5] for _ in range(3)])
    kwargs: dict[str, Tensor] = {
        "none": {},
        "idx_mask": {"idx_mask": idx},
        "mask": {"mask": torch.rand(3, seq) > 0.5},
        "idx_keep": {"idx_keep": idx},
    }[case]
    out = ours(x, **kwargs)
    assert out.shape == (3, 5 if case == "idx_keep" else seq, 32)
    torch.testing.assert_close(out, theirs(x, **kwargs))
    # Positions are the frozen sine-cosine code of lightly.
    torch.testing.assert_close(
        ours.pos_embed, LightlyDecoder(**ARGS, num_prefix_tokens=prefix).pos_embed
    )
    assert not ours.pos_embed.requires_grad


def test_masked_tokens_replaced_and_mask_token_gradient() -> None:
    decoder = MaskedVisionTransformerDecoderTIMM(**ARGS)  # type: ignore[arg-type]
    x = torch.randn(2, 17, 32)
    idx_mask = torch.tensor([[1, 4], [16, 0]])
    pre = decoder.preprocess(x, idx_mask=idx_mask)
    expected = x.clone()
    for b in range(2):
        for i in idx_mask[b]:
            expected[b, i] = decoder.mask_token[0, 0]
    torch.testing.assert_close(pre, expected + decoder.pos_embed)
    decoder(x, idx_mask=idx_mask).sum().backward()
    assert decoder.mask_token.grad is not None and decoder.mask_token.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="idx_mask and mask"):
        decoder(x, idx_mask=idx_mask, mask=torch.ones(2, 17, dtype=torch.bool))


def test_initialization_flags_and_custom_mask_token() -> None:
    token = torch.nn.Parameter(torch.zeros(1, 1, 32))
    decoder = MaskedVisionTransformerDecoderTIMM(
        **ARGS,
        initialize_weights=False,
        mask_token=token,  # type: ignore[arg-type]
    )
    assert decoder.mask_token is token
    assert torch.equal(decoder.pos_embed, torch.zeros_like(decoder.pos_embed))
    assert isinstance(decoder, MaskedVisionTransformerDecoder)
    with pytest.raises(TypeError, match="abstract"):
        MaskedVisionTransformerDecoder()  # type: ignore[abstract]
