"""Vision transformer with prefix-causal attention for autoregressive image models (AIM).

AIM [0] pretrains a ViT to predict the next patch in raster order. Its attention is
*prefix-causal*: a random number of leading patches (the prefix) attend to each other
bidirectionally, as at downstream time, and every later patch attends only to the patches
before it and itself. The caller passes a boolean ``mask`` of shape (B, N), True for the
tokens after the prefix (see ``random_prefix_mask``).

The classes subclass timm's ``Attention``, ``Block`` and ``VisionTransformer`` so that the
parameter names (and pretrained timm weights) are timm's. timm is optional: this module
imports without it and the classes raise an ``ImportError`` that says ``pip install timm``.

- [0]: AIM, 2024, https://arxiv.org/abs/2401.08541
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


class _TimmMissing(nn.Module):
    """Stand-in base class when timm is not installed: building a subclass fails clearly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ImportError(
            f"{type(self).__name__} requires timm; install it with `pip install timm`."
        )


try:
    from timm.models.vision_transformer import Attention, Block, VisionTransformer
except ImportError:  # pragma: no cover - exercised in a subprocess without timm
    Attention = Block = VisionTransformer = _TimmMissing  # type: ignore[misc,assignment]


def prefix_causal_attention_mask(mask: Tensor, sequence_length: int | None = None) -> Tensor:
    """Boolean attention mask of prefix-causal attention (AIM [0]).

    Query ``i`` may attend to key ``j`` if ``j <= i`` (causal) or if ``j`` is in the prefix
    (``mask[b, j]`` is False). So prefix tokens see the whole prefix and nothing after it, and
    every later token sees the prefix and the tokens up to itself.

    - [0]: AIM, 2024, https://arxiv.org/abs/2401.08541

    Args:
        mask: Boolean tensor with shape (B, N), True for the tokens after the prefix.
        sequence_length: Length of the sequence the mask is used on; defaults to N.

    Returns:
        Boolean tensor with shape (B, 1, N, N), True where attention is allowed.

    Example:
        >>> import torch
        >>> mask = torch.tensor([[False, False, True, True]])
        >>> prefix_causal_attention_mask(mask)[0, 0].int()
        tensor([[1, 1, 0, 0],
                [1, 1, 0, 0],
                [1, 1, 1, 0],
                [1, 1, 1, 1]], dtype=torch.int32)
    """
    n = mask.shape[1] if sequence_length is None else sequence_length
    if mask.shape[1] != n:
        raise ValueError(
            f"mask must have shape (batch_size, {n}) to match the token sequence, "
            f"got {tuple(mask.shape)}."
        )
    causal = torch.ones(n, n, dtype=torch.bool, device=mask.device).tril()
    in_prefix = ~mask.to(torch.bool)
    return (causal[None] | in_prefix[:, None, :]).unsqueeze(1)


class MaskedCausalAttention(Attention):
    """timm ``Attention`` with the prefix-causal attention of AIM [0].

    Takes the constructor arguments of timm's ``Attention``; only ``forward`` differs.

    - [0]: AIM, 2024, https://arxiv.org/abs/2401.08541

    Shapes:
        x (B, N, dim), mask (B, N) -> (B, N, dim).

    Example:
        >>> import torch
        >>> attn = MaskedCausalAttention(dim=32, num_heads=2)
        >>> mask = torch.tensor([[False, True, True]] * 2)
        >>> attn(torch.randn(2, 3, 32), mask=mask).shape
        torch.Size([2, 3, 32])
    """

    def forward(self, x: Tensor, mask: Tensor | None = None, is_causal: bool = True) -> Tensor:
        """Self-attention over ``x``.

        Args:
            x: Tokens with shape (B, N, dim).
            mask: Boolean tensor with shape (B, N), True for the tokens after the prefix,
                which attend causally. None: every token attends to every token.
            is_causal: False ignores ``mask`` (bidirectional attention). Defaults to True,
                unlike timm.

        Returns:
            Tensor with shape (B, N, dim).
        """
        B, N, _ = x.shape
        attn_mask = (
            prefix_causal_attention_mask(mask, N) if is_causal and mask is not None else None
        )
        gate = getattr(self, "gate", None)
        gate_values = gate(x).sigmoid() if gate is not None else None
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        dropout_p = self.attn_drop.p if self.training else 0.0
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        else:
            # Explicit softmax path (timm's fused_attn off, e.g. for ONNX export).
            scores = (q * self.scale) @ k.transpose(-2, -1)
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            x = self.attn_drop(scores.softmax(dim=-1)) @ v
        x = x.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)
        norm = getattr(self, "norm", None)  # timm >= 1.0.10: optional scale norm
        if norm is not None:
            x = norm(x)
        if gate_values is not None:
            x = x * gate_values
        out: Tensor = self.proj_drop(self.proj(x))
        return out


_BLOCK_TAKES_ATTN_LAYER = "attn_layer" in inspect.signature(Block.__init__).parameters
_ATTENTION_PARAMETERS = set(inspect.signature(Attention.__init__).parameters)


class MaskedCausalBlock(Block):
    """timm ``Block`` whose attention is ``MaskedCausalAttention`` (AIM [0]).

    Takes the constructor arguments of timm's ``Block``.

    - [0]: AIM, 2024, https://arxiv.org/abs/2401.08541

    Example:
        >>> import torch
        >>> block = MaskedCausalBlock(dim=32, num_heads=2)
        >>> block(torch.randn(2, 5, 32), mask=torch.ones(2, 5, dtype=torch.bool)).shape
        torch.Size([2, 5, 32])
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if _BLOCK_TAKES_ATTN_LAYER and kwargs.get("attn_layer") in (None, "", "attn", Attention):
            super().__init__(*args, **{**kwargs, "attn_layer": MaskedCausalAttention})
        else:
            # Older timm: build the block, then swap in the causal attention with the
            # arguments timm's Attention understands.
            super().__init__(*args, **kwargs)
            attn_kwargs = {k: v for k, v in kwargs.items() if k in _ATTENTION_PARAMETERS}
            self.attn = MaskedCausalAttention(*args, **attn_kwargs)

    def forward(self, x: Tensor, mask: Tensor | None = None, is_causal: bool = True) -> Tensor:
        """Pre-norm attention and MLP with residuals: (B, N, dim) -> (B, N, dim).

        Args:
            x: Tokens with shape (B, N, dim).
            mask: See ``MaskedCausalAttention.forward``.
            is_causal: See ``MaskedCausalAttention.forward``.
        """
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), mask=mask, is_causal=is_causal)))
        out: Tensor = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return out


class MaskedCausalVisionTransformer(VisionTransformer):
    """timm ``VisionTransformer`` with the prefix-causal attention of AIM [0].

    Takes the constructor arguments of timm's ``VisionTransformer``; the blocks default to
    ``MaskedCausalBlock``. AIM uses ``class_token=False, no_embed_class=True`` and a fixed 2D
    sine-cosine positional embedding.

    - [0]: AIM, 2024, https://arxiv.org/abs/2401.08541

    Shapes:
        images (B, C, H, W), mask (B, N) -> ``forward_features``: (B, N, embed_dim), with N the
        number of tokens (prefix tokens included). A mask over the patches only,
        (B, num_patches), is also accepted: prefix tokens then attend bidirectionally.

    Example:
        >>> import torch
        >>> vit = MaskedCausalVisionTransformer(
        ...     img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
        ...     class_token=False, no_embed_class=True, global_pool="avg",
        ... )
        >>> mask = torch.arange(16).expand(2, 16) >= 5  # prefix of 5 patches
        >>> vit.forward_features(torch.randn(2, 3, 32, 32), mask=mask).shape
        torch.Size([2, 16, 32])
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("block_fn", MaskedCausalBlock)
        super().__init__(*args, **kwargs)

    def forward_features(
        self, x: Tensor, mask: Tensor | None = None, is_causal: bool = True
    ) -> Tensor:
        """Patch-embeds images and runs the prefix-causal transformer.

        Args:
            x: Images with shape (B, C, H, W).
            mask: Boolean tensor with shape (B, N) or (B, num_patches), True for the tokens
                after the prefix (causal attention); None for bidirectional attention.
            is_causal: False ignores ``mask``.

        Returns:
            Tensor with shape (B, N, embed_dim), normalized by the final norm.
        """
        x = self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))
        if mask is not None and mask.shape[1] == x.shape[1] - self.num_prefix_tokens:
            # Prefix (class / register) tokens belong to the bidirectional prefix.
            prefix = mask.new_zeros(mask.shape[0], self.num_prefix_tokens, dtype=torch.bool)
            mask = torch.cat([prefix, mask.to(torch.bool)], dim=1)
        for block in self.blocks:
            run = partial(block, mask=mask, is_causal=is_causal)
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = cast(Tensor, checkpoint(run, x, use_reentrant=False))
            else:
                x = run(x)
        out: Tensor = self.norm(x)
        return out

    def forward(self, x: Tensor, mask: Tensor | None = None, is_causal: bool = True) -> Tensor:
        """``forward_head(forward_features(x, mask, is_causal))``: pooled features / logits.

        Overridden because recent timm passes ``attn_mask`` to ``forward_features``, which this
        class replaces by ``mask``.
        """
        out: Tensor = self.forward_head(self.forward_features(x, mask=mask, is_causal=is_causal))
        return out
