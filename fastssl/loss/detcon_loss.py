"""DetCon losses: contrastive learning between object regions (Hénaff et al. 2021).

Both losses reduce to one pure function, :func:`detcon_loss`. Every region of every image is
a query; its positives are the regions of the *other* view of the same image that were
pooled under the same mask id, and its negatives are all regions of both views of every
other image (gathered from all processes with ``gather_distributed``) plus the regions of
the other view of its own image under a different mask. Regions of the query's own view
and image under the same mask id are left out of the softmax.

LightlySSL 1.6 builds the ``(B, M, B * world_size, M)`` logits four times and pushes the
left-out entries to ``-1e9``; here the log-sum-exp over all keys runs through the blockwise
kernels of :mod:`fastssl.kernels.contrastive` with the left-out entries as excluded columns
(``exp(-1e9)`` is exactly 0 in float32, so the values are the same), and only the
``(B, M, M)`` similarities between regions of the same image are formed for the positives.
``FASTSSL_FUSED_LOSS=0`` (or ``fused=False``) selects the plain formula instead.
"""

from __future__ import annotations

import torch
import torch.distributed as torch_dist
from torch import Tensor, nn
from torch.nn import functional as F

from fastssl.kernels import contrastive
from fastssl.utils import dist

_NAMES = ("pred_view0", "pred_view1", "target_view0", "target_view1")


def _check_inputs(views: tuple[Tensor, ...], mask_view0: Tensor, mask_view1: Tensor) -> None:
    shape = views[0].shape
    if len(shape) != 3 or any(v.shape != shape for v in views):
        shapes = ", ".join(f"{n}={tuple(v.shape)}" for n, v in zip(_NAMES, views, strict=True))
        raise ValueError(
            f"The views must all have shape (batch_size, num_masks, dim), got {shapes}."
        )
    for name, mask in (("mask_view0", mask_view0), ("mask_view1", mask_view1)):
        if mask.shape != shape[:2]:
            raise ValueError(
                f"{name} must have shape (batch_size, num_masks) = {tuple(shape[:2])}, got "
                f"{tuple(mask.shape)}."
            )
        if mask.is_floating_point() or mask.is_complex():
            raise ValueError(f"{name} must hold integer mask ids, got dtype {mask.dtype}.")


def _same_mask(mask_a: Tensor, mask_b: Tensor) -> Tensor:
    """``(B, M, M)`` boolean: region ``i`` of ``mask_a`` and ``j`` of ``mask_b`` share an id."""
    return mask_a.unsqueeze(2) == mask_b.unsqueeze(1)


def _excluded_columns(mask: Tensor, first_column: Tensor) -> Tensor:
    """Columns of the query's own view and image under the query's mask id, ``(B * M, M)``.

    Row ``(b, i)`` lists ``first_column[b] + j`` for every region ``j`` with
    ``mask[b, j] == mask[b, i]``; the other entries repeat ``first_column[b] + i`` (the
    query's own column, which is always left out), so every row has the same width.
    """
    b, m = mask.shape
    regions = torch.arange(m, device=mask.device)
    own = regions.view(1, m, 1).expand(b, m, m)
    columns = torch.where(_same_mask(mask, mask), regions.view(1, 1, m), own)
    return (columns + first_column.view(b, 1, 1)).reshape(b * m, m)


def _region_lse(
    queries: Tensor, keys: Tensor, exclude: Tensor, temperature: float, fused: bool | None
) -> Tensor:
    """Per-query log-sum-exp over the keys minus the excluded columns, shape (n,)."""
    if not contrastive.use_fused(fused):
        return contrastive.lse_rows(queries, keys, exclude, temperature, fused=False)
    # The Triton kernels take at most two excluded columns per row; with more mask regions
    # the tiled torch kernel runs (on any device, also without a (n, m) buffer).
    backend = None if exclude.shape[1] <= 2 else "torch"
    return contrastive.blockwise_lse(queries, keys, exclude, temperature, backend=backend)


def detcon_loss(
    pred_view0: Tensor,
    pred_view1: Tensor,
    target_view0: Tensor,
    target_view1: Tensor,
    mask_view0: Tensor,
    mask_view1: Tensor,
    temperature: float = 0.1,
    gather_distributed: bool = True,
    *,
    fused: bool | None = None,
) -> Tensor:
    """DetCon loss (Hénaff et al. 2021, arXiv:2103.10957, Eq. 2), symmetrised over the views.

    With ``p`` the L2-normalised predictions and ``t`` the L2-normalised targets, the query
    ``p0[b, i]`` meets the keys ``t1`` (other view) and ``t0`` (own view) of every image.
    Its cross-entropy is ``lse_i - mean_{j in P(b, i)} <p0[b, i], t1[b, j]> / temperature``
    with ``P(b, i) = {j : mask_view1[b, j] == mask_view0[b, i]}`` and ``lse_i`` the
    log-sum-exp of all logits except those of ``t0[b, j]`` with
    ``mask_view0[b, j] == mask_view0[b, i]``. A query without positives counts 0; the others
    are weighted by ``1 / #{j : mask_view0[b, j] == mask_view0[b, i]}``. The loss is the
    mean over ``(b, i)`` of the weighted cross-entropies, plus the same with the views
    swapped. Its mean over processes equals the full-batch loss.

    Args:
        pred_view0: Mask-pooled predictions of the first view, shape (B, M, D).
        pred_view1: Mask-pooled predictions of the second view, shape (B, M, D).
        target_view0: Mask-pooled targets of the first view, shape (B, M, D).
        target_view1: Mask-pooled targets of the second view, shape (B, M, D).
        mask_view0: Mask ids of the regions of the first view, integers of shape (B, M).
        mask_view1: Mask ids of the regions of the second view, integers of shape (B, M).
        temperature: Logits are divided by it.
        gather_distributed: Use the targets of all processes as negatives (with gradient).
        fused: True/False forces the blockwise kernel / the plain formula; None reads
            ``$FASTSSL_FUSED_LOSS`` (kernel unless it is 0).

    Returns:
        Scalar loss.

    Raises:
        ValueError: On inconsistent shapes, float masks or a zero temperature.

    Example:
        >>> views = [torch.randn(2, 3, 8) for _ in range(4)]
        >>> masks = torch.randint(0, 4, (2, 3)), torch.randint(0, 4, (2, 3))
        >>> detcon_loss(*views, *masks).shape
        torch.Size([])
    """
    _check_inputs((pred_view0, pred_view1, target_view0, target_view1), mask_view0, mask_view1)
    contrastive.check_temperature(temperature)
    b, m, d = pred_view0.shape
    offset = 0
    targets = torch.stack([target_view0, target_view1])  # (2, B, M, D)
    if gather_distributed and dist.is_distributed():
        # One collective for both views; its backward reduce-scatters the key gradients.
        targets = dist.gather_cat(targets.transpose(0, 1)).transpose(0, 1)
        offset = dist.rank() * b
    global_b = targets.shape[1]
    keys = F.normalize(targets, dim=-1).reshape(2 * global_b * m, d)
    t0, t1 = F.normalize(target_view0, dim=-1), F.normalize(target_view1, dim=-1)
    p0, p1 = F.normalize(pred_view0, dim=-1), F.normalize(pred_view1, dim=-1)

    # Keys are [t0 of every image, t1 of every image]; a query leaves out regions of its
    # own view and image under its own mask id (including itself).
    image = torch.arange(b, device=pred_view0.device) + offset
    exclude = torch.cat(
        [
            _excluded_columns(mask_view0, image * m),
            _excluded_columns(mask_view1, (global_b + image) * m),
        ]
    )
    queries = torch.cat([p0, p1]).reshape(2 * b * m, d)
    lse = _region_lse(queries, keys, exclude, temperature, fused).view(2, b, m)

    losses = []
    for view, (query, other, own_mask, other_mask) in enumerate(
        [(p0, t1, mask_view0, mask_view1), (p1, t0, mask_view1, mask_view0)]
    ):
        positive = _same_mask(own_mask, other_mask)  # (B, M, M)
        num_positives = positive.sum(dim=2)
        logits = torch.einsum("bid,bjd->bij", query, other) / temperature
        positive_logit = (logits * positive).sum(dim=2) / num_positives.clamp(min=1)
        # A mask id sampled k times gives k queries: weighting each by 1 / k makes every
        # object count once, however often it was sampled. Queries without a positive
        # (their mask id is not in the other view) drop out.
        repeats = _same_mask(own_mask, own_mask).sum(dim=2)
        weight = (num_positives > 0) / repeats
        losses.append((weight * (lse[view] - positive_logit)).mean())
    return losses[0] + losses[1]


class DetConBLoss(nn.Module):
    """DetCon-B loss (Hénaff et al., "Efficient Visual Pretraining with Contrastive
    Detection", ICCV 2021, https://arxiv.org/abs/2103.10957).

    DetCon pools the feature maps of two views under the masks of an unsupervised
    segmentation and contrasts the pooled regions: a region is pulled towards the region of
    the other view of the same image under the same mask id and pushed away from the
    regions of all other images (and from the other regions of its own image). DetCon-B uses
    BYOL's branches: predictions of one view are contrasted with targets of both views, and
    the loss is symmetrised over the views. See :func:`detcon_loss` for the formula.

    Shapes: predictions and targets (B, M, D) with B images, M sampled regions per image and
    D features; masks (B, M) of integer mask ids; returns a scalar.

    Attributes:
        temperature: Logits are divided by it.
        gather_distributed: Use the targets of all processes as negatives.
        eps: LightlySSL's attribute: the smallest allowed ``abs(temperature)``.

    Example:
        >>> loss_fn = DetConBLoss(temperature=0.1, gather_distributed=False)
        >>> pred0, pred1, target0, target1 = (torch.randn(4, 3, 16) for _ in range(4))
        >>> mask0, mask1 = torch.randint(0, 5, (4, 3)), torch.randint(0, 5, (4, 3))
        >>> loss = loss_fn(pred0, pred1, target0, target1, mask0, mask1)
    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = True) -> None:
        """Builds the loss.

        Args:
            temperature: Logits are divided by it; ``abs(temperature)`` must be >= 1e-8.
            gather_distributed: Use the targets of all processes as negatives.

        Raises:
            ValueError: If ``abs(temperature) < 1e-8``, or if ``gather_distributed`` is
                True and torch was built without distributed support.
        """
        super().__init__()
        self.eps = 1e-8
        contrastive.check_temperature(temperature)
        if gather_distributed and not torch_dist.is_available():
            raise ValueError(
                "gather_distributed=True needs torch.distributed, which this torch build "
                "lacks: pass gather_distributed=False."
            )
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(
        self,
        pred_view0: Tensor,
        pred_view1: Tensor,
        target_view0: Tensor,
        target_view1: Tensor,
        mask_view0: Tensor,
        mask_view1: Tensor,
    ) -> Tensor:
        """Computes the loss.

        Args:
            pred_view0: Mask-pooled predictions of the first view, shape (B, M, D).
            pred_view1: Mask-pooled predictions of the second view, shape (B, M, D).
            target_view0: Mask-pooled targets of the first view, shape (B, M, D).
            target_view1: Mask-pooled targets of the second view, shape (B, M, D).
            mask_view0: Mask ids of the first view's regions, integers of shape (B, M).
            mask_view1: Mask ids of the second view's regions, integers of shape (B, M).

        Returns:
            Scalar loss.
        """
        return detcon_loss(
            pred_view0,
            pred_view1,
            target_view0,
            target_view1,
            mask_view0,
            mask_view1,
            self.temperature,
            self.gather_distributed,
        )


class DetConSLoss(nn.Module):
    """DetCon-S loss (Hénaff et al., "Efficient Visual Pretraining with Contrastive
    Detection", ICCV 2021, https://arxiv.org/abs/2103.10957).

    The SimCLR variant of DetCon: one branch, so the pooled regions of each view serve as
    both queries and keys (:class:`DetConBLoss` with predictions equal to targets).

    Shapes: views (B, M, D) with B images, M sampled regions per image and D features;
    masks (B, M) of integer mask ids; returns a scalar.

    Attributes:
        detconbloss: The :class:`DetConBLoss` that computes the loss.

    Example:
        >>> loss_fn = DetConSLoss(temperature=0.1, gather_distributed=False)
        >>> view0, view1 = torch.randn(4, 3, 16), torch.randn(4, 3, 16)
        >>> mask0, mask1 = torch.randint(0, 5, (4, 3)), torch.randint(0, 5, (4, 3))
        >>> loss = loss_fn(view0, view1, mask0, mask1)
    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = True) -> None:
        """Builds the loss.

        Args:
            temperature: Logits are divided by it; ``abs(temperature)`` must be >= 1e-8.
            gather_distributed: Use the views of all processes as negatives.

        Raises:
            ValueError: As :class:`DetConBLoss`.
        """
        super().__init__()
        self.detconbloss = DetConBLoss(
            temperature=temperature, gather_distributed=gather_distributed
        )

    def forward(
        self, view0: Tensor, view1: Tensor, mask_view0: Tensor, mask_view1: Tensor
    ) -> Tensor:
        """Computes the loss.

        Args:
            view0: Mask-pooled embeddings of the first view, shape (B, M, D).
            view1: Mask-pooled embeddings of the second view, shape (B, M, D).
            mask_view0: Mask ids of the first view's regions, integers of shape (B, M).
            mask_view1: Mask ids of the second view's regions, integers of shape (B, M).

        Returns:
            Scalar loss.
        """
        loss: Tensor = self.detconbloss(view0, view1, view0, view1, mask_view0, mask_view1)
        return loss
