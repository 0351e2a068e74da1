"""Encoders that turn an agent's actions into conditioning embeddings (world models)."""

from __future__ import annotations

from torch import Tensor, nn


class ActionEncoder(nn.Module):
    """MLP that maps every action vector of a sequence to a conditioning embedding.

    Used by latent world models such as LeWorldModel (LeWM, 2026,
    https://arxiv.org/abs/2603.19312) to condition the dynamics predictor on the action
    taken at each frame: ``Linear -> SiLU -> Linear``, applied per timestep. To condition
    on the proprioceptive state as well, concatenate it to the action first.

    Args:
        action_dim: Dimension of one action vector (keyword-only, as all arguments).
        output_dim: Dimension of the conditioning embedding.
        hidden_dim: Width of the hidden layer; defaults to ``4 * output_dim``.

    Raises:
        ValueError: If ``action_dim`` or ``output_dim`` is not positive.

    Shapes:
        (B, T, action_dim) -> (B, T, output_dim).

    Example:
        >>> import torch
        >>> encoder = ActionEncoder(action_dim=2, output_dim=16)
        >>> encoder(torch.randn(8, 4, 2)).shape
        torch.Size([8, 4, 16])
    """

    def __init__(self, *, action_dim: int, output_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        if action_dim <= 0:
            raise ValueError(f"ActionEncoder: 'action_dim' must be positive, got {action_dim}.")
        if output_dim <= 0:
            raise ValueError(f"ActionEncoder: 'output_dim' must be positive, got {output_dim}.")
        hidden = 4 * output_dim if hidden_dim is None else hidden_dim
        self.action_dim = action_dim
        self.output_dim = output_dim
        self.mlp = nn.Sequential(
            nn.Linear(action_dim, hidden), nn.SiLU(), nn.Linear(hidden, output_dim)
        )

    def forward(self, actions: Tensor) -> Tensor:
        """Embeds ``actions`` of shape (B, T, action_dim) into (B, T, output_dim)."""
        if actions.ndim != 3:
            raise ValueError(
                "ActionEncoder: 'actions' must have shape (B, T, action_dim), "
                f"got {tuple(actions.shape)}."
            )
        out: Tensor = self.mlp(actions)
        return out


__all__ = ["ActionEncoder"]
