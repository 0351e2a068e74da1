"""CAPI's cross-attention predictor with rotary position embeddings.

timm is optional: this module imports without it and the predictor raises an
``ImportError`` that says ``pip install timm`` when it is built (its rotary embedding
table is timm's ``RotaryEmbeddingCat``).

- [0]: Darcet et al. 2025, "Cluster and Predict Latent Patches for Improved Masked Image
  Modeling", https://arxiv.org/abs/2502.08769
- [1]: Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position Embedding",
  https://arxiv.org/abs/2104.09864
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fastssl.models.modules.masked_vision_transformer_timm import _require_timm


def _rotate(x: Tensor, rope: Tensor) -> Tensor:
    """Rotates consecutive feature pairs of ``x`` by the angles encoded in ``rope`` [1].

    Args:
        x: (..., N, head_dim) queries or keys.
        rope: (..., N, 2 * head_dim): the sines, then the cosines, of the angle of every
            feature (each angle repeated for both features of its pair), as timm's
            ``RotaryEmbeddingCat.get_embed`` returns them.

    Returns:
        ``x`` with pair ``(a, b)`` mapped to ``(a cos - b sin, b cos + a sin)``.
    """
    sin, cos = rope.chunk(2, dim=-1)
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return x * cos + rotated * sin


class _RoPECrossAttentionBlock(nn.Module):
    """Pre-norm block: queries cross-attend to the context (rotary positions), then an MLP.

    Args:
        embed_dim: Token dimension.
        num_heads: Number of attention heads.
        mlp_ratio: Hidden dimension of the MLP relative to ``embed_dim``.
    """

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.query_norm = nn.LayerNorm(embed_dim)
        self.context_norm = nn.LayerNorm(embed_dim)
        self.to_query = nn.Linear(embed_dim, embed_dim)
        self.to_key_value = nn.Linear(embed_dim, 2 * embed_dim)
        self.projection = nn.Linear(embed_dim, embed_dim)
        self.mlp_norm = nn.LayerNorm(embed_dim)
        hidden_dim = int(embed_dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, embed_dim)
        )

    def forward(
        self, queries: Tensor, context: Tensor, query_rope: Tensor, context_rope: Tensor
    ) -> Tensor:
        """Updates ``queries`` (B, Nq, D) from ``context`` (B, Nc, D).

        ``query_rope`` (B, Nq, 2 * head_dim) and ``context_rope`` (B, Nc, 2 * head_dim)
        are the rotary embeddings of their grid positions.
        """
        heads = (self.num_heads, self.head_dim)
        # (B, N, D) -> (B, heads, N, head_dim)
        q = self.to_query(self.query_norm(queries)).unflatten(-1, heads).transpose(1, 2)
        kv = self.to_key_value(self.context_norm(context)).unflatten(-1, (2, *heads))
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        # The same rotation for every head: broadcast over the head dimension.
        q = _rotate(q, query_rope.unsqueeze(1))
        k = _rotate(k, context_rope.unsqueeze(1))
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        queries = queries + self.projection(attended)
        out: Tensor = queries + self.mlp(self.mlp_norm(queries))
        return out


class CAPIPredictorTIMM(nn.Module):
    """Cross-attention predictor of CAPI [0] with 2D rotary position embeddings [1].

    A learned mask token is placed at every masked patch; these queries cross-attend,
    block after block, to the visible encoder tokens (without attending to each other),
    and a final norm gives the predictions. Positions enter only through rotary
    embeddings of the row-major grid indices of the queries and keys, so the predictor
    works on any subset of tokens without a positional table. Unlike an MAE decoder, the
    visible tokens are not updated and no self-attention over the full sequence is paid.

    Same parameters, names and initialization (mask token ~ N(0, 0.02), PyTorch defaults
    elsewhere) as LightlySSL 1.6's class; attention uses PyTorch's fused
    ``scaled_dot_product_attention``.

    - [0]: CAPI, Darcet et al. 2025, https://arxiv.org/abs/2502.08769
    - [1]: RoFormer, Su et al. 2021, https://arxiv.org/abs/2104.09864

    Args:
        embed_dim: Dimension of the input and output tokens.
        grid_size: Patch grid as (height, width), or one int for a square grid.
        depth: Number of cross-attention blocks.
        num_heads: Number of attention heads; ``embed_dim / num_heads`` must be a multiple
            of 4 (two axes, sine and cosine pairs).
        mlp_ratio: Hidden dimension of the MLPs relative to ``embed_dim``.

    Raises:
        ValueError: If ``embed_dim`` is not divisible by ``num_heads``, or the head
            dimension is not a multiple of 4.

    Shapes:
        ``context`` (B, Nc, embed_dim), ``context_positions`` (B, Nc) and
        ``query_positions`` (B, Nq) grid indices -> (B, Nq, embed_dim).

    Example:
        >>> predictor = CAPIPredictorTIMM(embed_dim=32, grid_size=4, depth=1, num_heads=2)
        >>> context = torch.randn(2, 6, 32)
        >>> positions = torch.randperm(16).expand(2, -1)
        >>> predictor(context, positions[:, :6], positions[:, 6:]).shape
        torch.Size([2, 10, 32])
    """

    def __init__(
        self,
        embed_dim: int,
        grid_size: int | tuple[int, int],
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
    ) -> None:
        _require_timm(type(self).__name__)
        from timm.layers import RotaryEmbeddingCat

        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"CAPIPredictorTIMM: 'embed_dim' ({embed_dim}) must be divisible by "
                f"'num_heads' ({num_heads})."
            )
        head_dim = embed_dim // num_heads
        if head_dim % 4 != 0:
            raise ValueError(
                f"CAPIPredictorTIMM: the head dimension embed_dim / num_heads ({head_dim}) "
                "must be a multiple of 4 for 2D rotary embeddings."
            )
        height, width = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
        # Fixed (not learned, not saved) table of the sines and cosines of every position.
        self.rope = RotaryEmbeddingCat(dim=head_dim, in_pixels=False, feat_shape=[height, width])
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.ModuleList(
            _RoPECrossAttentionBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(
        self, context: Tensor, context_positions: Tensor, query_positions: Tensor
    ) -> Tensor:
        """Predicts the tokens at ``query_positions`` from the visible ``context``.

        Args:
            context: Visible encoder tokens (B, Nc, embed_dim).
            context_positions: Row-major grid indices (B, Nc) of the visible tokens.
            query_positions: Row-major grid indices (B, Nq) of the tokens to predict.

        Returns:
            Tensor of shape (B, Nq, embed_dim).
        """
        rope = self.rope.get_embed().to(context.device)  # (num_patches, 2 * head_dim)
        context_rope, query_rope = rope[context_positions], rope[query_positions]
        queries = self.mask_token.expand(context.shape[0], query_positions.shape[1], -1)
        for block in self.blocks:
            queries = block(queries, context, query_rope, context_rope)
        out: Tensor = self.norm(queries)
        return out


__all__ = ["CAPIPredictorTIMM"]
