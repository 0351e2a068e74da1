"""I-JEPA [0] predictor built from timm transformer blocks.

timm is optional: this module imports without it and the predictor raises an
``ImportError`` that says ``pip install timm`` when it is built.

- [0]: Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding
  Predictive Architecture", https://arxiv.org/abs/2301.08243
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from fastssl.models._utils.positional import initialize_2d_sine_cosine_positional_embedding
from fastssl.models.modules.ijepa import _ijepa_predict, _Masks
from fastssl.models.modules.masked_vision_transformer import _layer_norm_eps6
from fastssl.models.modules.masked_vision_transformer_decoder_timm import (
    MaskedVisionTransformerDecoderTIMM,
)

# Parameter names of LightlySSL's predictor before its transformer moved into `decoder`.
_LEGACY_NAMES = {
    "predictor_pos_embed": "decoder.pos_embed",
    "mask_token": "decoder.mask_token",
}
_LEGACY_PREFIXES = {"predictor_blocks.": "decoder.blocks.", "predictor_norm.": "decoder.norm."}


def _migrated_name(name: str) -> str | None:
    """The current name of a legacy parameter name, or None if ``name`` is not legacy."""
    if name in _LEGACY_NAMES:
        return _LEGACY_NAMES[name]
    for old, new in _LEGACY_PREFIXES.items():
        if name.startswith(old):
            return new + name[len(old) :]
    return None


class IJEPAPredictorTIMM(nn.Module):
    """Predictor of I-JEPA [0] on timm blocks: context tokens + target mask tokens -> targets.

    The transformer (a zero-initialized mask token, a fixed 2D sine-cosine positional
    embedding without prefix tokens, ``depth`` timm blocks and a norm) is a
    :class:`~fastssl.models.modules.MaskedVisionTransformerDecoderTIMM` in ``decoder``;
    around it, a linear embedding ``mlp_dim -> predictor_embed_dim`` and a projection back.
    Every target mask is predicted from every context mask. Experimental.

    Same parameter names as LightlySSL 1.6; checkpoints with LightlySSL's older names
    (``predictor_pos_embed``, ``mask_token``, ``predictor_blocks.*``, ``predictor_norm.*``)
    are renamed on load with a ``DeprecationWarning``.

    - [0]: I-JEPA, Assran et al. 2023, https://arxiv.org/abs/2301.08243

    Args:
        num_patches: Patches per image (a perfect square).
        depth: Number of transformer blocks.
        mlp_dim: Dimension of the encoder's tokens, i.e. of the predictor's inputs and
            outputs (named after LightlySSL's argument).
        predictor_embed_dim: Token dimension inside the predictor.
        num_heads: Number of attention heads.
        qkv_bias: Bias in the query, key and value projections.
        mlp_ratio: Hidden dimension of the block MLPs relative to ``predictor_embed_dim``.
        drop_path_rate: Stochastic depth probability of every block.
        proj_drop_rate: Dropout after the attention projection and in the MLPs.
        attn_drop_rate: Dropout on the attention weights.
        norm_layer: Normalization layer constructor.

    Shapes:
        ``x`` (M_ctx * B, K_ctx, mlp_dim), ``masks_x`` M_ctx x (B, K_ctx), ``masks`` M_tgt x
        (B, K_tgt) -> (M_tgt * M_ctx * B, K_tgt, mlp_dim).

    Example:
        >>> import torch
        >>> predictor = IJEPAPredictorTIMM(num_patches=16, depth=1, mlp_dim=32,
        ...                                predictor_embed_dim=16, num_heads=2)
        >>> x = torch.randn(2, 4, 32)
        >>> context, target = torch.tensor([[0, 1, 2, 3]] * 2), torch.tensor([[8, 9]] * 2)
        >>> predictor(x, context, [target, target]).shape
        torch.Size([4, 2, 32])
    """

    def __init__(
        self,
        num_patches: int,
        depth: int,
        mlp_dim: int,
        predictor_embed_dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        norm_layer: Callable[..., nn.Module] = _layer_norm_eps6,
    ) -> None:
        super().__init__()
        # timm's default initialization for the blocks; the mask token stays zero.
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=num_patches,
            embed_dim=predictor_embed_dim,
            depth=depth,
            num_heads=num_heads,
            num_prefix_tokens=0,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            proj_drop_rate=proj_drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
            norm_layer=norm_layer,
            initialize_weights=False,
        )
        self.predictor_embed = nn.Linear(mlp_dim, predictor_embed_dim, bias=True)
        self.predictor_proj = nn.Linear(predictor_embed_dim, mlp_dim, bias=True)
        initialize_2d_sine_cosine_positional_embedding(self.decoder.pos_embed, num_prefix_tokens=0)
        self.register_load_state_dict_pre_hook(self._migrate_legacy_state_dict)

    def forward(self, x: Tensor, masks_x: _Masks, masks: _Masks) -> Tensor:
        """Predicts the target tokens of ``masks`` from context tokens ``x`` at ``masks_x``.

        Args:
            x: Encoded context tokens (len(masks_x) * B, K_ctx, mlp_dim).
            masks_x: Patch indices (B, K_ctx) of the context, a tensor or a list.
            masks: Patch indices (B, K_tgt) of the targets, a tensor or a list.

        Returns:
            Tensor of shape (len(masks) * len(masks_x) * B, K_tgt, mlp_dim).
        """
        return _ijepa_predict(
            x,
            masks_x,
            masks,
            embed=self.predictor_embed,
            pos_embed=self.decoder.pos_embed,
            mask_token=self.decoder.mask_token,
            transformer=self.decoder.decode,
            project=self.predictor_proj,
        )

    @staticmethod
    def _migrate_legacy_state_dict(
        module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *args: Any
    ) -> None:
        """Renames LightlySSL's pre-``decoder`` parameter names in ``state_dict``, in place."""
        renamed = False
        for key in [k for k in state_dict if k.startswith(prefix)]:
            new = _migrated_name(key[len(prefix) :])
            if new is not None:
                state_dict[prefix + new] = state_dict.pop(key)
                renamed = True
        if renamed:
            warnings.warn(
                "Loading an I-JEPA predictor checkpoint with the old parameter names "
                "(predictor_pos_embed, predictor_blocks, predictor_norm, mask_token); they "
                "were renamed to decoder.pos_embed, decoder.blocks, decoder.norm and "
                "decoder.mask_token. Save the checkpoint again to silence this warning.",
                DeprecationWarning,
                stacklevel=2,
            )


__all__ = ["IJEPAPredictorTIMM"]
