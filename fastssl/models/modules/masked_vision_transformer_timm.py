"""Masked vision transformer on top of ``timm.models.vision_transformer.VisionTransformer``.

timm is optional: this module imports without it and the classes raise an ``ImportError`` that
says ``pip install timm`` when they are built.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn
from torch.nn import Parameter
from torch.utils.checkpoint import checkpoint

from fastssl.models.modules.masked_vision_transformer import (
    MaskedVisionTransformer,
    _check_weight_initialization,
    _init_pos_embed,
    _init_sincos_pos_embed,
    _mask_token_or_zeros,
    _with_intermediates,
    _xavier_flat_,
)

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer


def _require_timm(what: str) -> None:
    """Raises an ImportError naming the fix when timm is not installed."""
    try:
        import timm  # noqa: F401
    except ImportError as err:
        raise ImportError(f"{what} requires timm; install it with `pip install timm`.") from err


def init_weights(module: nn.Module) -> None:
    """MAE initialization of one module: xavier-uniform ``Linear``, unit-affine ``LayerNorm``.

    Meant for ``model.apply(init_weights)``; other modules are left untouched.

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(4, 4)
        >>> init_weights(layer)
        >>> bool((layer.bias == 0).all())
        True
    """
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        if module.bias is not None:
            nn.init.zeros_(module.bias)
        if module.weight is not None:
            nn.init.ones_(module.weight)


def _timm_blocks(
    dim: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float,
    qkv_bias: bool,
    proj_drop: float,
    attn_drop: float,
    norm_layer: Callable[..., nn.Module],
    drop_path: float = 0.0,
) -> nn.Sequential:
    """``depth`` timm transformer blocks of width ``dim``, as the timm decoders stack them."""
    from timm.models.vision_transformer import Block

    return nn.Sequential(
        *(
            Block(
                dim=dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                proj_drop=proj_drop,
                attn_drop=attn_drop,
                drop_path=drop_path,
                # timm annotates norm_layer differently across versions.
                norm_layer=cast(Any, norm_layer),
            )
            for _ in range(depth)
        )
    )


def _fixed_pos_embed(num_tokens: int, dim: int) -> Parameter:
    """A (1, num_tokens, dim) positional embedding that is not learned (filled at init)."""
    return Parameter(torch.zeros(1, num_tokens, dim), requires_grad=False)


def _init_decoder_weights(
    module: nn.Module, mask_token: Tensor, pos_embed: Tensor, num_prefix_tokens: int
) -> None:
    """MAE's decoder init: N(0, 0.02) mask token, sine-cosine positions, ``init_weights``."""
    nn.init.normal_(mask_token, std=0.02)
    _init_sincos_pos_embed(pos_embed, num_prefix_tokens)
    module.apply(init_weights)


def _run_blocks(blocks: Iterable[nn.Module], tokens: Tensor, grad_checkpointing: bool) -> Tensor:
    """Runs ``tokens`` through ``blocks``, recomputing activations in backward if asked."""
    for block in blocks:
        if grad_checkpointing and torch.is_grad_enabled():
            # Non-reentrant checkpointing also gives the blocks gradients when every input is
            # frozen (e.g. a frozen patch embedding), unlike the reentrant variant.
            tokens = cast(Tensor, checkpoint(block, tokens, use_reentrant=False))
        else:
            tokens = block(tokens)
    return tokens


class MaskedVisionTransformerTIMM(MaskedVisionTransformer):
    """Masked vision transformer [0] wrapping a timm ``VisionTransformer``.

    Backbone of the timm variants of MAE [1], SimMIM [2], MSN / PMSN [3] and I-JEPA. Class and
    register tokens, ``no_embed_class`` and ``dynamic_img_size`` models are supported; the
    parameter names are timm's (``vit.patch_embed...``), so the state dict is the one of
    lightly's class of the same name.

    - [0]: ViT, 2021, https://arxiv.org/abs/2010.11929
    - [1]: MAE, 2022, https://arxiv.org/abs/2111.06377
    - [2]: SimMIM, 2022, https://arxiv.org/abs/2111.09886
    - [3]: MSN, 2022, https://arxiv.org/abs/2204.07141

    Args:
        vit: The timm ``VisionTransformer`` (e.g. ``timm.create_model("vit_base_patch16_224")``).
        mask_token: Mask token with shape (1, 1, embed_dim); a zero-initialized one is created
            when None.
        weight_initialization: '' re-initializes the weights as in MAE (xavier-uniform patch
            embedding and linear layers, unit LayerNorms, class token ~ N(0, 0.02)); 'skip'
            keeps them (use it for pretrained weights).
        antialias: Antialias when resampling positional embeddings (``dynamic_img_size``).
        pos_embed_initialization: 'sincos' (fixed 2D sine-cosine, MAE), 'learn' (trainable,
            truncated normal) or 'skip'.

    Shapes:
        images (B, 3, H, W) -> ``encode``: (B, N', embed_dim) with N' = ``sequence_length``
        = num_prefix_tokens + num_patches or the number of kept tokens; ``forward``: the
        pooled features of the timm model, (B, embed_dim) (all tokens if ``global_pool=''``).

    Example:
        >>> import torch
        >>> from timm.models.vision_transformer import VisionTransformer
        >>> vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
        >>> model = MaskedVisionTransformerTIMM(vit=vit)
        >>> images = torch.randn(4, 3, 32, 32)
        >>> model.encode(images, idx_keep=torch.tensor([[0, 3, 7]] * 4)).shape
        torch.Size([4, 3, 32])
        >>> model(images, mask=torch.zeros(4, 17, dtype=torch.bool)).shape
        torch.Size([4, 32])
    """

    def __init__(
        self,
        vit: VisionTransformer,
        mask_token: Parameter | None = None,
        weight_initialization: str = "",
        antialias: bool = True,
        pos_embed_initialization: str = "sincos",
    ) -> None:
        _require_timm(type(self).__name__)
        super().__init__()
        _check_weight_initialization(weight_initialization)
        self.vit = vit
        self.mask_token = _mask_token_or_zeros(mask_token, self.vit.embed_dim)
        if weight_initialization != "skip":
            self._initialize_weights()
        _init_pos_embed(self.vit.pos_embed, pos_embed_initialization, self._pos_embed_prefix)
        self.antialias = antialias
        self.grad_checkpointing = False

    @property
    def _pos_embed_prefix(self) -> int:
        """Number of prefix tokens that have a positional embedding (0 if no_embed_class)."""
        return 0 if self.vit.no_embed_class else int(self.vit.num_prefix_tokens)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the activations of every block in backward to save memory."""
        self.grad_checkpointing = enable

    @property
    def sequence_length(self) -> int:
        """Number of prefix (class + register) tokens + number of patches."""
        return int(self.vit.patch_embed.num_patches + self.vit.num_prefix_tokens)

    def forward(
        self,
        images: Tensor,
        idx_mask: Tensor | None = None,
        idx_keep: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Encodes images and pools them as the timm model does (``global_pool``).

        Returns:
            (B, embed_dim) for 'token' (first token), 'avg' (mean of the non-prefix tokens),
            'max', 'avgmax' or attention pooling; (B, N', embed_dim) if ``global_pool=''``.
        """
        x = self.encode(images, idx_mask=idx_mask, idx_keep=idx_keep, mask=mask)
        if hasattr(self.vit, "pool"):
            pooled: Tensor = self.vit.pool(x)
            return pooled
        # Older timm without VisionTransformer.pool.
        if getattr(self.vit, "attn_pool", None) is not None:
            return cast(Tensor, self.vit.attn_pool(x))
        global_pool = cast(str, getattr(self.vit, "global_pool", ""))
        if global_pool == "avg":
            return x[:, self.vit.num_prefix_tokens :].mean(dim=1)
        return x[:, 0] if global_pool else x

    def forward_intermediates(
        self,
        images: Tensor,
        idx_mask: Tensor | None = None,
        idx_keep: Tensor | None = None,
        norm: bool = False,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """Returns the final normalized tokens and the output of every block."""
        tokens = self.vit.norm_pre(
            self.preprocess(images, idx_mask=idx_mask, idx_keep=idx_keep, mask=mask)
        )
        return _with_intermediates(
            tokens,
            self.vit.blocks,
            lambda block, x: _run_blocks((block,), x, self.grad_checkpointing),
            self.vit.norm,
            norm,
        )

    def encode(
        self,
        images: Tensor,
        idx_mask: Tensor | None = None,
        idx_keep: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Returns the encoded tokens, shape (B, N', embed_dim). See the base class."""
        tokens = self.vit.norm_pre(
            self.preprocess(images, idx_mask=idx_mask, idx_keep=idx_keep, mask=mask)
        )
        tokens = _run_blocks(self.vit.blocks, tokens, self.grad_checkpointing)
        out: Tensor = self.vit.norm(tokens)
        return out

    def images_to_tokens(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, num_patches, embed_dim)."""
        tokens: Tensor = self.vit.patch_embed(images)
        if tokens.ndim == 4:
            # dynamic_img_size models keep the patch grid (B, H', W', D); flatten it row-major.
            tokens = tokens.flatten(1, 2)
        return tokens

    def prepend_prefix_tokens(self, x: Tensor) -> Tensor:
        """Prepends the class token, then the register tokens, if the model has them."""
        prefix = [
            token.expand(x.shape[0], -1, -1)
            for token in (self.vit.cls_token, self.vit.reg_token)
            if token is not None
        ]
        return torch.cat([*prefix, x], dim=1) if prefix else x

    def add_pos_embed(self, x: Tensor) -> Tensor:
        """Adds timm's positional embedding (to the prefix tokens too unless no_embed_class)."""
        pos_embed: Tensor | None = self.vit.pos_embed
        if pos_embed is not None:
            num_prefix = int(self.vit.num_prefix_tokens)
            num_patches = x.shape[1] - num_prefix
            if self.vit.dynamic_img_size:
                side = math.isqrt(num_patches)
                from timm.layers.pos_embed import resample_abs_pos_embed

                pos_embed = resample_abs_pos_embed(
                    pos_embed,
                    (side, side),
                    num_prefix_tokens=self._pos_embed_prefix,
                    antialias=self.antialias,
                )
            assert pos_embed is not None
            if self.vit.no_embed_class:
                # Only the patches carry a position; prefix tokens are position-free.
                x = torch.cat([x[:, :num_prefix], x[:, num_prefix:] + pos_embed], dim=1)
            else:
                x = x + pos_embed
        out: Tensor = self.vit.pos_drop(x)
        return out

    def _initialize_weights(self) -> None:
        # MAE treats the patch embedding as a linear layer on flattened patches.
        _xavier_flat_(self.vit.patch_embed.proj.weight)
        if self.vit.has_class_token and self.vit.cls_token is not None:
            nn.init.normal_(self.vit.cls_token, std=0.02)
        self.apply(init_weights)
