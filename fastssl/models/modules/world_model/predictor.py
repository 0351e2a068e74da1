"""Latent dynamics predictors: past frame embeddings (+ actions) -> future frame embeddings.

The predictor of a latent world model never sees pixels: it reads the embeddings of past
frames and, optionally, the actions taken, and predicts the embeddings of the next frames,
so an encoder trained with it and a frozen pretrained encoder are interchangeable.
Conditioning on actions follows AdaLN-Zero (Peebles & Xie 2023, "Scalable Diffusion Models
with Transformers", https://arxiv.org/abs/2212.09748), as in LeWorldModel (LeWM, 2026,
https://arxiv.org/abs/2603.19312).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class AdaLNZero(nn.Sequential):
    """AdaLN-Zero projection: conditioning (..., D) -> six modulations (..., 6 * D).

    ``SiLU -> Linear(D, 6 * D)`` with a zero-initialized linear layer, so that the block it
    conditions starts as the identity (all gates 0). The output holds, in this order, the
    shift, scale and gate of the attention sublayer and those of the MLP sublayer; split it
    with ``chunk(6, dim=-1)``. A ``Sequential`` so the linear layer is child ``1``, as in
    LightlySSL (parameter names ``1.weight``, ``1.bias``).

    Args:
        hidden_dim: Width D of the conditioning embedding and of the transformer.

    Shapes:
        (..., hidden_dim) -> (..., 6 * hidden_dim).

    Example:
        >>> AdaLNZero(8)(torch.randn(2, 3, 8)).abs().sum().item()
        0.0
    """

    def __init__(self, hidden_dim: int) -> None:
        linear = nn.Linear(hidden_dim, 6 * hidden_dim, bias=True)
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)
        super().__init__(nn.SiLU(), linear)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """Adaptive layer norm: ``x * (1 + scale) + shift`` (scale 0 is the identity)."""
    return x * (1 + scale) + shift


class PredictorBlock(nn.Module):
    """Pre-norm transformer block, optionally conditioned with AdaLN-Zero.

    ``conditional=True``: a per-token conditioning embedding ``cond`` (an action embedding
    for LeWM) gives the shift and scale applied after each affine-free layer norm and the
    gate of each residual branch through :class:`AdaLNZero`; the gates start at 0, so the
    block starts as the identity. ``conditional=False``: a plain pre-norm block with
    learnable layer norms that ignores ``cond``. All arguments are keyword-only.
    Experimental, as in LightlySSL.

    Args:
        hidden_dim: Token dimension D.
        num_heads: Number of attention heads (dividing D).
        mlp_ratio: Hidden dimension of the MLP relative to D.
        dropout: Dropout on the attention weights, after the attention projection and in
            the MLP.
        conditional: Condition on ``cond`` with AdaLN-Zero.

    Shapes:
        ``x`` (B, T, D), ``cond`` (B, T, D) or broadcastable, ``attn_mask`` (T, T) boolean
        (True where attention is allowed) or additive -> (B, T, D).

    Example:
        >>> block = PredictorBlock(hidden_dim=16, num_heads=2, mlp_ratio=4.0, dropout=0.0)
        >>> x = torch.randn(2, 3, 16)
        >>> torch.equal(block(x, cond=torch.randn(2, 3, 16)), x)  # identity at init
        True
    """

    def __init__(
        self,
        *,
        hidden_dim: int,
        num_heads: int,
        mlp_ratio: float,
        dropout: float,
        conditional: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.conditional = conditional
        # Conditional blocks get their scale and shift from AdaLN: no affine in the norms.
        self.norm1 = nn.LayerNorm(hidden_dim, elementwise_affine=not conditional, eps=1e-6)
        self.norm2 = nn.LayerNorm(hidden_dim, elementwise_affine=not conditional, eps=1e-6)
        self.qkv = nn.Linear(hidden_dim, 3 * hidden_dim, bias=False)
        self.proj = nn.Linear(hidden_dim, hidden_dim)
        self.proj_drop = nn.Dropout(dropout)
        mlp_hidden = int(hidden_dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_dim, mlp_hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_hidden, hidden_dim),
            nn.Dropout(dropout),
        )
        self.adaln: AdaLNZero | None = AdaLNZero(hidden_dim) if conditional else None

    def _attention(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        """Multi-head self-attention of (B, T, D) tokens with PyTorch's fused kernel."""
        # (B, T, 3 * D) -> 3 x (B, heads, T, head_dim)
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        projected: Tensor = self.proj_drop(self.proj(out.transpose(1, 2).flatten(2)))
        return projected

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        cond: Tensor | None = None,
    ) -> Tensor:
        """Applies the block to ``x`` (B, T, D); ``cond`` is required iff conditional."""
        if self.adaln is None:
            x = x + self._attention(self.norm1(x), attn_mask)
            out: Tensor = x + self.mlp(self.norm2(x))
            return out
        if cond is None:
            raise ValueError("PredictorBlock: 'cond' is required when the block is conditional.")
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaln(cond).chunk(6, dim=-1)
        x = x + gate_a * self._attention(_modulate(self.norm1(x), shift_a, scale_a), attn_mask)
        out = x + gate_m * self.mlp(_modulate(self.norm2(x), shift_m, scale_m))
        return out


def _causal_mask(num_frames: int, device: torch.device) -> Tensor:
    """(T, T) boolean mask, True where frame t may attend to frame s (s <= t)."""
    return torch.ones(num_frames, num_frames, dtype=torch.bool, device=device).tril()


class LatentDynamicsPredictor(nn.Module):
    """Transformer that predicts the next frame embedding for every frame of a clip.

    Frame embeddings are projected to ``hidden_dim``, get a learned per-frame positional
    embedding and pass ``depth`` :class:`PredictorBlock` s, a layer norm and a projection
    to ``output_dim``. Output ``t`` predicts the embedding of frame ``t + 1``. With
    ``causal=True`` frame ``t`` attends to frames ``0..t``; with ``conditional=True``
    (LeWM, 2026, https://arxiv.org/abs/2603.19312) the action embedding of frame ``t``,
    projected to ``hidden_dim``, conditions every block at that frame through AdaLN-Zero
    (Peebles & Xie 2023, https://arxiv.org/abs/2212.09748); ``conditional=False`` is the
    actionless predictor. All arguments are keyword-only. Experimental, as in LightlySSL.

    Args:
        num_frames: Longest context window, in frames.
        input_dim: Dimension of a frame embedding, and of an action embedding.
        hidden_dim: Width of the transformer (divisible by ``num_heads``).
        depth: Number of blocks.
        num_heads: Number of attention heads.
        output_dim: Dimension of a predicted embedding; defaults to ``input_dim``.
        mlp_ratio: Hidden dimension of the block MLPs relative to ``hidden_dim``.
        dropout: Dropout inside the blocks.
        conditional: Condition on action embeddings (then ``action_emb`` is required).
        causal: Attend only to the current and past frames.

    Raises:
        ValueError: If ``num_frames`` is not positive or ``hidden_dim`` is not divisible
            by ``num_heads``.

    Shapes:
        ``embeddings`` (B, T, input_dim), ``action_emb`` (B, T, input_dim) ->
        (B, T, output_dim), T <= num_frames.

    Example:
        >>> predictor = LatentDynamicsPredictor(
        ...     num_frames=4, input_dim=16, hidden_dim=32, depth=1, num_heads=2
        ... )
        >>> emb, actions = torch.randn(8, 4, 16), torch.randn(8, 4, 16)
        >>> predictor(emb, action_emb=actions).shape  # pred[:, t] predicts emb[:, t + 1]
        torch.Size([8, 4, 16])
    """

    def __init__(
        self,
        *,
        num_frames: int,
        input_dim: int,
        hidden_dim: int,
        depth: int,
        num_heads: int,
        output_dim: int | None = None,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        conditional: bool = True,
        causal: bool = True,
    ) -> None:
        super().__init__()
        if num_frames <= 0:
            raise ValueError(
                f"LatentDynamicsPredictor: 'num_frames' must be positive, got {num_frames}."
            )
        if hidden_dim % num_heads != 0:
            raise ValueError(
                f"LatentDynamicsPredictor: 'hidden_dim' ({hidden_dim}) must be divisible by "
                f"'num_heads' ({num_heads})."
            )
        self.num_frames = num_frames
        self.input_dim = input_dim
        self.output_dim = input_dim if output_dim is None else output_dim
        self.conditional = conditional
        self.causal = causal
        self.input_proj = nn.Linear(input_dim, hidden_dim)
        self.output_proj = nn.Linear(hidden_dim, self.output_dim)
        self.action_proj = nn.Linear(input_dim, hidden_dim) if conditional else None
        self.frame_pos_embed = nn.Parameter(torch.zeros(1, num_frames, hidden_dim))
        nn.init.trunc_normal_(self.frame_pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            PredictorBlock(
                hidden_dim=hidden_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                dropout=dropout,
                conditional=conditional,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(hidden_dim)

    def _check_actions(self, action_emb: Tensor | None) -> None:
        """Actions are required by a conditional predictor and refused by the other one."""
        if self.conditional and action_emb is None:
            raise ValueError(
                "LatentDynamicsPredictor: 'action_emb' is required for a conditional "
                "predictor (conditional=True)."
            )
        if not self.conditional and action_emb is not None:
            raise ValueError(
                "LatentDynamicsPredictor: 'action_emb' must be None for an unconditional "
                "predictor (conditional=False)."
            )

    def forward(self, embeddings: Tensor, action_emb: Tensor | None = None) -> Tensor:
        """Predicts, for every frame ``t``, the embedding of frame ``t + 1``.

        Args:
            embeddings: Frame embeddings (B, T, input_dim), T <= num_frames.
            action_emb: Embeddings (B, T, input_dim) of the action taken *at* each frame
                (leading to the next one); required iff ``conditional``. A training step
                reads ``predictor(emb[:, :-1], action_emb=act[:, :-1])`` against
                ``emb[:, 1:]``.

        Returns:
            Tensor of shape (B, T, output_dim); the last entry has no target in the clip.
        """
        if embeddings.ndim != 3:
            raise ValueError(
                "LatentDynamicsPredictor: 'embeddings' must have shape (B, T, input_dim), "
                f"got {tuple(embeddings.shape)}."
            )
        batch_size, num_frames = embeddings.shape[:2]
        if num_frames > self.num_frames:
            raise ValueError(
                f"LatentDynamicsPredictor: 'embeddings' have {num_frames} frames, but the "
                f"context window is {self.num_frames}."
            )
        self._check_actions(action_emb)
        cond = None
        if action_emb is not None:
            if action_emb.shape[:2] != (batch_size, num_frames):
                raise ValueError(
                    "LatentDynamicsPredictor: 'action_emb' must have shape (B, T, D) matching "
                    f"'embeddings', got {tuple(action_emb.shape)} and "
                    f"{tuple(embeddings.shape)}."
                )
            assert self.action_proj is not None
            cond = self.action_proj(action_emb)
        x = self.input_proj(embeddings) + self.frame_pos_embed[:, :num_frames]
        attn_mask = _causal_mask(num_frames, x.device) if self.causal else None
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask, cond=cond)
        out: Tensor = self.output_proj(self.norm(x))
        return out

    def rollout(
        self,
        embeddings: Tensor,
        action_emb: Tensor | None = None,
        steps: int = 1,
    ) -> Tensor:
        """Predicts ``steps`` future frames, feeding each prediction back as input.

        The context window slides: each step sees at most ``num_frames`` frames, the most
        recent ones. A planner calls this to score candidate action sequences.

        Args:
            embeddings: Context embeddings (B, T_ctx, input_dim).
            action_emb: Action embeddings (B, >= T_ctx + steps - 1, input_dim), required
                iff ``conditional``.
            steps: Number of frames to predict, >= 1.

        Returns:
            Tensor of shape (B, steps, output_dim).

        Raises:
            ValueError: If ``steps`` < 1, if ``steps`` > 1 while ``output_dim !=
                input_dim``, or if the actions are missing, superfluous or too short.
        """
        if steps < 1:
            raise ValueError(f"LatentDynamicsPredictor.rollout: 'steps' must be >= 1, got {steps}.")
        if steps > 1 and self.output_dim != self.input_dim:
            raise ValueError(
                "LatentDynamicsPredictor.rollout feeds predictions back as input, so it "
                f"requires output_dim ({self.output_dim}) == input_dim ({self.input_dim}) "
                "when steps > 1."
            )
        self._check_actions(action_emb)
        num_context = embeddings.shape[1]
        if action_emb is not None and action_emb.shape[1] < num_context + steps - 1:
            raise ValueError(
                f"LatentDynamicsPredictor.rollout: 'action_emb' must cover "
                f"{num_context + steps - 1} frames, got {action_emb.shape[1]}."
            )
        frames = list(embeddings.unbind(dim=1))
        predictions = []
        for step in range(steps):
            end = num_context + step
            start = max(0, end - self.num_frames)
            window = torch.stack(frames[start:end], dim=1)
            actions = None if action_emb is None else action_emb[:, start:end]
            frames.append(self(window, action_emb=actions)[:, -1])
            predictions.append(frames[-1])
        return torch.stack(predictions, dim=1)


__all__ = ["AdaLNZero", "LatentDynamicsPredictor", "PredictorBlock"]
