"""Moving-average center of features, as used by DINO to keep the teacher from collapsing.

Same interface as LightlySSL 1.6's ``lightly.models.modules.center``. The batch center is
averaged over processes with :func:`fastssl.utils.dist.all_reduce_mean`, so every process
holds the same center, equal to the one a single process would compute on the full batch
(for equal per-process batch sizes). The update is an in-place ``copy_`` of the buffer, which
``torch.compile(fullgraph=True)`` traces without a graph break.

- DINO: Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers",
  https://arxiv.org/abs/2104.14294
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from fastssl.utils import dist


@torch.no_grad()
def center_mean(x: Tensor, dim: tuple[int, ...]) -> Tensor:
    """Returns the mean of ``x`` over ``dim`` (dims kept), averaged over all processes.

    Args:
        x: Feature tensor of any shape, e.g. (num_views, batch_size, dim).
        dim: Dimensions to average over.

    Returns:
        Tensor with the shape of ``x`` where the dimensions in ``dim`` are 1. Every process
        gets the same value: the mean over the global batch when the per-process batches
        have equal sizes.

    Example:
        >>> center_mean(torch.tensor([[1.0, 2.0], [3.0, 6.0]]), dim=(0,))
        tensor([[2., 4.]])
    """
    return dist.all_reduce_mean(torch.mean(x, dim=dim, keepdim=True))


@torch.no_grad()
def center_momentum(center: Tensor, batch_center: Tensor, momentum: float) -> Tensor:
    """Returns the moving average ``momentum * center + (1 - momentum) * batch_center``.

    Args:
        center: The current center.
        batch_center: The center of the new batch, broadcastable to ``center``.
        momentum: Weight of the current center, in [0, 1].

    Returns:
        The updated center (a new tensor).

    Example:
        >>> center_momentum(torch.zeros(2), torch.ones(2), momentum=0.9)
        tensor([0.1000, 0.1000])
    """
    return center * momentum + batch_center * (1.0 - momentum)


#: Maps the ``mode`` argument of :class:`Center` (and ``DINOLoss(center_mode=...)``) to the
#: function that computes a batch center.
CENTER_MODE_TO_FUNCTION: dict[str, Callable[..., Tensor]] = {"mean": center_mean}


def get_center_function(mode: str, argument: str = "mode") -> Callable[..., Tensor]:
    """Returns the center function for ``mode`` or raises a ValueError naming ``argument``."""
    center_fn = CENTER_MODE_TO_FUNCTION.get(mode)
    if center_fn is None:
        raise ValueError(
            f"Unknown {argument} '{mode}'. Valid modes are {sorted(CENTER_MODE_TO_FUNCTION)}."
        )
    return center_fn


class Center(nn.Module):
    """Center of a feature tensor tracked with a moving average (DINO, Caron et al. 2021).

    The dimensions of ``size`` equal to 1 are the ones the center averages over: for
    features of shape (batch_size, sequence_length, dim) centered over batch and sequence,
    use ``size=(1, 1, dim)``.

    Attributes:
        size: Shape of the tracked center.
        dim: The dimensions averaged over (those where ``size`` is 1).
        momentum: Weight of the old center in the moving average.
        center: Buffer of shape ``size``, initialised to zeros.

    Example:
        >>> center = Center(size=(1, 3), momentum=0.5)
        >>> center.update(torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]))
        >>> center.value
        tensor([[1.0000, 1.5000, 2.0000]])
    """

    center: Tensor

    def __init__(self, size: Sequence[int], mode: str = "mean", momentum: float = 0.9) -> None:
        """Creates the center buffer.

        Args:
            size: Shape of the center; dimensions of size 1 are averaged over.
            mode: How a batch center is computed. Only ``"mean"`` is supported.
            momentum: Weight of the old center in the moving average.

        Raises:
            ValueError: If ``mode`` is unknown or ``size`` has no dimension of size 1.
        """
        super().__init__()
        self._center_fn = get_center_function(mode)
        self.size = tuple(size)
        self.dim = tuple(i for i, s in enumerate(self.size) if s == 1)
        if not self.dim:
            # torch.mean(dim=()) reduces over *all* dimensions, which is never what a
            # center of this shape means.
            raise ValueError(
                f"Center size must have at least one dimension equal to 1 (the dimensions "
                f"to average over), got size={self.size}."
            )
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(self.size))

    @property
    def value(self) -> Tensor:
        """The current center, of shape ``size``."""
        return self.center

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Moves the center towards the center of ``x``.

        Like LightlySSL 1.6, ``x`` only needs the dimensions that are averaged over, and the
        batch center (``x`` averaged over them, dims kept) must broadcast against ``size``.
        For example ``Center(size=(1, 1, D))`` accepts both (B, N, D) and (B, D) features;
        for (B, D) the averaged dimensions (0, 1) are *all* of ``x``'s, so every entry of
        the center moves towards the same scalar, as in LightlySSL. Should broadcasting
        change the shape (e.g. (B, N, D) features for ``size=(1, D)`` give an (1, N, D)
        center) the buffer takes the new shape, again as in LightlySSL; otherwise it is
        updated in place, which ``torch.compile(fullgraph=True)`` traces without a break.

        Args:
            x: Features with more than ``max(dim)`` dimensions whose batch center broadcasts
                against ``size``, e.g. (batch_size, dim) for ``size=(1, dim)``.

        Raises:
            ValueError: If ``x`` lacks one of the averaged dimensions or its batch center
                does not broadcast against the center.
        """
        if x.dim() <= max(self.dim):
            raise ValueError(
                f"Center.update averages x over dims {self.dim} (size={self.size}), so x needs "
                f"at least {max(self.dim) + 1} dimensions, got shape {tuple(x.shape)}."
            )
        batch_center = self._center_fn(x=x, dim=self.dim)
        try:
            new_shape = torch.broadcast_shapes(self.center.shape, batch_center.shape)
        except RuntimeError:
            raise ValueError(
                f"Center.update got x of shape {tuple(x.shape)}: its center over dims "
                f"{self.dim} has shape {tuple(batch_center.shape)}, which does not broadcast "
                f"against the center of shape {tuple(self.center.shape)}."
            ) from None
        new_center = center_momentum(self.center, batch_center, self.momentum)
        if new_shape == self.center.shape and new_center.dtype == self.center.dtype:
            self.center.copy_(new_center)
        else:
            self.center = new_center

    @torch.no_grad()
    def _center_mean(self, x: Tensor) -> Tensor:
        """Returns the mean of ``x`` over the center's averaged dimensions."""
        return center_mean(x=x, dim=self.dim)
