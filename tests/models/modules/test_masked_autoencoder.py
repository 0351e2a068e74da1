from __future__ import annotations

import torch
from lightly.models.modules import masked_autoencoder as lightly_mae
from torchvision.models.vision_transformer import VisionTransformer

from fastssl.models.modules.masked_autoencoder import MAEBackbone, MAEDecoder, MAEEncoder

BACKBONE = {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 32}


def test_backbone_matches_lightly() -> None:
    torch.manual_seed(0)
    ours = MAEBackbone(**BACKBONE, mlp_dim=64).eval()
    theirs = lightly_mae.MAEBackbone(**BACKBONE, mlp_dim=64).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    images = torch.randn(3, 3, 32, 32)
    idx_keep = torch.stack([torch.randperm(17)[:6] for _ in range(3)])
    for kwargs in ({}, {"idx_keep": idx_keep}):
        torch.testing.assert_close(ours.encode(images, **kwargs), theirs.encode(images, **kwargs))
        torch.testing.assert_close(ours(images, **kwargs), theirs(images, **kwargs))
    assert ours.encode(images, idx_keep=idx_keep).shape == (3, 6, 32)
    # Another (square) image size resizes the positional embedding like lightly.
    big = torch.randn(1, 3, 48, 48)
    torch.testing.assert_close(ours.encode(big), theirs.encode(big))
    assert not ours.encoder.pos_embedding.requires_grad


def test_from_vit_shares_modules_and_matches_lightly() -> None:
    vit = VisionTransformer(**BACKBONE, mlp_dim=64)
    ours = MAEBackbone.from_vit(vit).eval()
    assert ours.conv_proj is vit.conv_proj and ours.encoder.layers is vit.encoder.layers
    theirs = lightly_mae.MAEBackbone.from_vit(
        VisionTransformer(**BACKBONE, mlp_dim=64), initialize_weights=False
    ).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours(images), theirs(images))
    encoder = MAEEncoder.from_vit_encoder(vit.encoder, initialize_weights=False)
    assert encoder.pos_embedding is vit.encoder.pos_embedding


def test_encoder_and_decoder_match_lightly() -> None:
    torch.manual_seed(0)
    args = {"seq_length": 17, "num_layers": 1, "num_heads": 2}
    enc = MAEEncoder(**args, hidden_dim=32, mlp_dim=64, dropout=0.0, attention_dropout=0.0)
    enc_l = lightly_mae.MAEEncoder(
        **args, hidden_dim=32, mlp_dim=64, dropout=0.0, attention_dropout=0.0
    )
    enc_l.load_state_dict(enc.state_dict(), strict=True)
    x = torch.randn(2, 17, 32)
    idx_keep = torch.tensor([[0, 3, 4], [0, 16, 1]])
    torch.testing.assert_close(enc(x, idx_keep), enc_l(x, idx_keep))
    dec = MAEDecoder(**args, embed_input_dim=32, hidden_dim=16, mlp_dim=32, out_dim=192)
    dec_l = lightly_mae.MAEDecoder(
        **args, embed_input_dim=32, hidden_dim=16, mlp_dim=32, out_dim=192
    )
    dec_l.load_state_dict(dec.state_dict(), strict=True)
    out = dec(x)
    assert out.shape == (2, 17, 192)
    torch.testing.assert_close(out, dec_l(x))
    torch.testing.assert_close(dec.pos_embedding, dec_l.pos_embedding)
    emb = dec.embed(x)
    torch.testing.assert_close(dec.predict(dec.decode(emb)), out)
