from __future__ import annotations

import pytest
import torch
from lightly.models.modules import masked_autoencoder_timm as lightly_mae

from fastssl.models.modules.masked_autoencoder_timm import MAEDecoderTIMM, PixioDecoderTIMM

ARGS = {
    "num_patches": 16,
    "patch_size": 8,
    "embed_dim": 32,
    "decoder_embed_dim": 16,
    "decoder_num_heads": 2,
}


@pytest.mark.filterwarnings("ignore::FutureWarning")  # lightly deprecates these classes
@pytest.mark.parametrize(
    ("ours_cls", "name", "depth"),
    [(MAEDecoderTIMM, "MAEDecoderTIMM", 1), (PixioDecoderTIMM, "PixioDecoderTIMM", 2)],
)
def test_matches_lightly(ours_cls: type[MAEDecoderTIMM], name: str, depth: int) -> None:
    torch.manual_seed(0)
    ours = ours_cls(**ARGS, decoder_depth=depth).eval()  # type: ignore[arg-type]
    theirs = getattr(lightly_mae, name)(**ARGS, decoder_depth=depth).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(3, 17, 32)
    out = ours(x)
    assert out.shape == (3, 17, 3 * 8 * 8)
    torch.testing.assert_close(out, theirs(x))
    # The MAE pattern: embed, scatter into mask tokens, decode, predict.
    emb = ours.embed(x[:, :5])
    assert emb.shape == (3, 5, 16)
    full = ours.mask_token.expand(3, 17, -1).clone()
    full[:, :5] = emb
    torch.testing.assert_close(ours.predict(ours.decode(full)), theirs.predict(theirs.decode(full)))
    torch.testing.assert_close(ours.decoder_pos_embed, theirs.decoder_pos_embed)


def test_defaults() -> None:
    import inspect

    assert inspect.signature(PixioDecoderTIMM).parameters["decoder_depth"].default == 32
    assert inspect.signature(MAEDecoderTIMM).parameters["decoder_depth"].default == 8
    decoder = MAEDecoderTIMM(**ARGS, decoder_depth=1, num_prefix_tokens=0)  # type: ignore[arg-type]
    assert decoder.decoder_pos_embed.shape == (1, 16, 16)
    assert not decoder.decoder_pos_embed.requires_grad
    decoder(torch.randn(2, 16, 32)).sum().backward()
    assert decoder.decoder_embed.weight.grad is not None
