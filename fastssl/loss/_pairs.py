"""Checks and gathers the two embedding batches of a loss on paired views.

Private module: Barlow Twins and TiCo both take ``z_a`` and ``z_b`` of shape (n, d), gather
them over processes when asked, and need at least two rows of the (global) batch.
"""

from __future__ import annotations

from torch import Tensor

from fastssl.utils import dist


def gathered_pair(
    loss: str,
    z_a: Tensor,
    z_b: Tensor,
    gather_distributed: bool,
    dim_name: str = "dim",
    needs: str = "",
) -> tuple[Tensor, Tensor]:
    """``(z_a, z_b)``, gathered with gradient over all processes if ``gather_distributed``.

    Args:
        loss: Name of the loss, for the messages.
        z_a: Embeddings of the first views, shape (batch_size, dim).
        z_b: Embeddings of the second views, same shape.
        gather_distributed: Concatenate the batches of all processes.
        dim_name: Name of the feature axis in the shape message.
        needs: Why two rows are needed (e.g. " to standardise"), appended to the message.

    Raises:
        ValueError: If the shapes differ or the (global) batch has fewer than 2 rows.
    """
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(
            f"z_a and z_b must both have shape (batch_size, {dim_name}), got "
            f"{tuple(z_a.shape)} and {tuple(z_b.shape)}."
        )
    if gather_distributed:
        z_a, z_b = dist.gather_cat(z_a), dist.gather_cat(z_b)
    if z_a.shape[0] < 2:
        raise ValueError(
            f"{loss} needs a batch size of at least 2{needs}, got {z_a.shape[0]} "
            "(summed over processes when gather_distributed=True)."
        )
    return z_a, z_b
