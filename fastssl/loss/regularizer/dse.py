"""DSE: a dense-structure score of patch representations, used as a regulariser.

The k-means runs (one per image, one per group of images) are inherently sequential and
draw their random numbers in LightlySSL 1.6's order, so a seed gives the same clusters.
Everything that carries a gradient is batched: the nuclear norms of all clusters of all
images come from one batched ``svdvals`` of zero-padded cluster matrices.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def kmeans_plus_plus_init(x: Tensor, num_clusters: int) -> Tensor:
    """Initial centroids by k-means++ (Arthur & Vassilvitskii 2007).

    The first centroid is a uniformly drawn point; each next one is drawn with probability
    proportional to the squared distance to the nearest centroid so far (uniformly if all
    distances are 0). Random numbers are drawn with ``torch.randint`` and
    ``torch.multinomial`` on ``x``'s device.

    Args:
        x: Points, shape (n, d).
        num_clusters: Number of centroids, at most ``n``.

    Returns:
        Centroids of shape (num_clusters, d).
    """
    num_points = x.shape[0]
    first = torch.randint(num_points, (1,), device=x.device)
    centroids = [x[first]]
    nearest = torch.cdist(x, centroids[0]).squeeze(1)
    for _ in range(num_clusters - 1):
        weights = nearest.square()
        weights = weights / (weights.sum() + 1e-12)
        if weights.sum() == 0:
            weights = torch.full_like(weights, 1.0 / num_points)
        chosen = x[torch.multinomial(weights, 1)]
        centroids.append(chosen)
        # Only the newest centroid can move a point's nearest distance.
        nearest = torch.minimum(nearest, torch.cdist(x, chosen).squeeze(1))
    return torch.cat(centroids)


@torch.no_grad()
def kmeans(
    x: Tensor, num_clusters: int, max_iters: int = 20, tol: float = 1e-4
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with k-means++ initialisation, without gradient.

    An empty cluster is re-seeded at a uniformly drawn point. Stops when the centroids move
    by less than ``tol`` (Frobenius norm of the shift) or after ``max_iters`` updates.

    Args:
        x: Points, shape (n, d).
        num_clusters: Number of clusters; at most ``n`` are used.
        max_iters: Maximum number of centroid updates.
        tol: Threshold on the centroid shift.

    Returns:
        ``(centroids, labels)`` of shapes (k, d) and (n,) with ``k = min(num_clusters, n)``.

    Example:
        >>> x = torch.cat([torch.zeros(3, 2), torch.ones(3, 2)])
        >>> _, labels = kmeans(x, 2)
        >>> len(set(labels[:3].tolist())), len(set(labels.tolist()))
        (1, 2)
    """
    num_points = x.shape[0]
    k = min(num_clusters, num_points)
    centroids = kmeans_plus_plus_init(x, k)
    for _ in range(max_iters):
        labels = torch.cdist(x, centroids).argmin(dim=1)
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        updated = sums / counts.clamp(min=1).unsqueeze(1).to(x.dtype)
        for empty in (counts == 0).nonzero().flatten().tolist():
            updated[empty] = x[torch.randint(num_points, (1,), device=x.device)].squeeze(0)
        shift = (updated - centroids).square().sum().sqrt()
        centroids = updated
        if shift < tol:
            break
    return centroids, torch.cdist(x, centroids).argmin(dim=1)


def cluster_singular_sums(
    points: Tensor, labels: Tensor, num_clusters: int
) -> tuple[Tensor, Tensor]:
    """Normalised nuclear norm of every centred cluster, all clusters at once.

    For a cluster of ``m`` points ``X`` (m, d) the value is
    ``||X - mean(X)||_* / sqrt(max(m - 1, d))``. The clusters are written, centred, into a
    zero-padded (num_clusters, max_m, d) tensor: zero rows add only zero singular values,
    so one batched ``svdvals`` gives every cluster's singular values (and, since the
    gradient of a zero singular value is sent back along the all-ones direction that
    centring removes, the same gradient as one ``svdvals`` per cluster).

    Args:
        points: Shape (n, d).
        labels: Cluster of every point, integers in ``[0, num_clusters)``, shape (n,).
        num_clusters: Number of cluster ids.

    Returns:
        ``(values, defined)`` of shape (num_clusters,): the values, and which clusters have
        at least two points (the value of the others is 0 and meaningless).

    Example:
        >>> points = torch.tensor([[0.0, 0.0], [2.0, 0.0], [5.0, 5.0]])
        >>> values, defined = cluster_singular_sums(points, torch.tensor([0, 0, 1]), 2)
        >>> values[0].item(), defined.tolist()  # ||[[-1, 0], [1, 0]]||_* / sqrt(2)
        (1.0, [True, False])
    """
    counts = torch.bincount(labels, minlength=num_clusters)
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    starts = torch.cumsum(counts, dim=0) - counts
    slot = torch.arange(labels.shape[0], device=labels.device) - starts[sorted_labels]
    size = int(counts.max())
    padded = points.new_zeros(num_clusters, size, points.shape[1])
    padded = padded.index_put((sorted_labels, slot), points[order])
    filled = torch.arange(size, device=labels.device) < counts.unsqueeze(1)  # (K, size)
    means = padded.sum(dim=1) / counts.clamp(min=1).unsqueeze(1).to(points.dtype)
    centred = (padded - means.unsqueeze(1)) * filled.unsqueeze(2)
    norms = torch.linalg.svdvals(centred).sum(dim=1)
    scale = torch.clamp(counts - 1, min=points.shape[1]).to(points.dtype).sqrt()
    return norms / scale, counts > 1


def _mean_per_owner(values: Tensor, owner: Tensor, num_owners: int) -> Tensor:
    """Mean over the owners that have values of the mean of their values (0 if none)."""
    if values.numel() == 0:
        return values.new_zeros(())
    counts = torch.bincount(owner, minlength=num_owners)
    sums = values.new_zeros(num_owners).index_add(0, owner, values)
    has = counts > 0
    return (sums[has] / counts[has].to(values.dtype)).mean()


class DSERegularizer(nn.Module):
    """Dense Structure Estimator regulariser (Dai et al., "Exploring Structural Degradation
    in Dense Representations for Self-supervised Learning", 2025,
    https://arxiv.org/abs/2510.17299), training variant as in LightlySSL 1.6 (experimental).

    For dense representations (patches or spatial positions) the DSE score is

    ``dse = inter / l + erank - (intra_batch / l + intra_image / l) / 2``

    with ``l`` the mean norm of the globally centred representations; ``intra_image`` the
    mean (over images, then clusters) normalised nuclear norm of ``local_clusters`` k-means
    clusters of each image's patches; ``intra_batch`` the same for ``global_clusters``
    clusters of groups of ``max(global_clusters // local_clusters, 1)`` images; ``inter``
    the mean distance of a patch to its nearest *other* centroid in its group; and
    ``erank`` the effective rank (exponential of the entropy of the normalised singular
    values) of all patches, divided by its maximum. The module returns ``-weight * dse``, to
    be added to an SSL loss. The k-means steps carry no gradient.

    Shapes: ``representations`` (B, N, D) (a feature map (B, C, H, W) becomes
    ``features.flatten(2).transpose(1, 2)``); returns a scalar.

    Attributes:
        weight: Weight of the regularisation term.
        normalize: L2-normalise the representations along the feature dimension first.
        local_clusters: Number of clusters per image.
        global_clusters: Number of clusters per group of images.
        max_kmeans_iters: Maximum number of k-means iterations.
        tol: Early-stopping threshold of k-means on the centroid shift.

    Example:
        >>> regularizer = DSERegularizer(weight=0.1, global_clusters=6)
        >>> patch_tokens = torch.randn(4, 16, 8, requires_grad=True)
        >>> loss = regularizer(patch_tokens)
        >>> loss.backward()
    """

    def __init__(
        self,
        weight: float = 1.0,
        normalize: bool = True,
        local_clusters: int = 3,
        global_clusters: int = 24,
        max_kmeans_iters: int = 20,
        tol: float = 1e-4,
    ) -> None:
        """Builds the regulariser.

        Args:
            weight: Weight of the regularisation term; must be >= 0.
            normalize: L2-normalise the representations along the feature dimension.
            local_clusters: Number of clusters per image; must be >= 1.
            global_clusters: Number of clusters per group of images; must be >= 1.
            max_kmeans_iters: Maximum number of k-means iterations; must be >= 1.
            tol: Early-stopping threshold of k-means; must be > 0.

        Raises:
            ValueError: If an argument is out of its range.
        """
        super().__init__()
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}.")
        if local_clusters < 1:
            raise ValueError(f"local_clusters must be >= 1, got {local_clusters}.")
        if global_clusters < 1:
            raise ValueError(f"global_clusters must be >= 1, got {global_clusters}.")
        if max_kmeans_iters < 1:
            raise ValueError(f"max_kmeans_iters must be >= 1, got {max_kmeans_iters}.")
        if tol <= 0:
            raise ValueError(f"tol must be > 0, got {tol}.")
        self.weight = weight
        self.normalize = normalize
        self.local_clusters = local_clusters
        self.global_clusters = global_clusters
        self.max_kmeans_iters = max_kmeans_iters
        self.tol = tol

    def forward(self, representations: Tensor) -> Tensor:
        """Computes ``-weight * dse``.

        Args:
            representations: Dense representations of shape (B, N, D).

        Returns:
            Scalar regularisation loss.

        Raises:
            ValueError: If ``representations`` is not 3-D or has an empty dimension.
        """
        if representations.ndim != 3:
            raise ValueError(
                "representations must have shape (batch_size, num_tokens, dim), "
                f"got {tuple(representations.shape)}."
            )
        if min(representations.shape) == 0:
            raise ValueError(
                "representations must have non-empty batch, token, and feature dimensions, "
                f"got {tuple(representations.shape)}."
            )
        if self.weight == 0:
            return representations.new_zeros(())
        if self.normalize:
            representations = F.normalize(representations, dim=-1)

        b, n, d = representations.shape
        flat = representations.reshape(b * n, d)
        centred = flat - flat.mean(dim=0)
        scale = centred.norm(dim=1).mean() + 1e-12

        # The k-means runs must come in this order (images, then groups) to draw the same
        # random numbers as LightlySSL.
        intra_image = self._intra_image(representations)
        inter_batch, intra_batch = self._batch_structure(representations)
        erank = self._effective_rank(flat)
        dse = inter_batch / scale + erank - 0.5 * (intra_batch / scale + intra_image / scale)
        return -self.weight * dse

    def _kmeans(self, x: Tensor, num_clusters: int) -> tuple[Tensor, Tensor]:
        return kmeans(x.detach(), num_clusters, self.max_kmeans_iters, self.tol)

    def _intra_image(self, representations: Tensor) -> Tensor:
        """Mean over images of the mean normalised nuclear norm of their clusters."""
        b, n, d = representations.shape
        k = min(self.local_clusters, n)
        # Cluster ids made unique over the batch: image i owns ids [i * k, (i + 1) * k).
        labels = torch.stack([self._kmeans(image, k)[1] for image in representations])
        labels = labels + k * torch.arange(b, device=labels.device).unsqueeze(1)
        values, defined = cluster_singular_sums(
            representations.reshape(b * n, d), labels.flatten(), b * k
        )
        owner = torch.arange(b, device=values.device).repeat_interleave(k)
        return _mean_per_owner(values[defined], owner[defined], b)

    def _batch_structure(self, representations: Tensor) -> tuple[Tensor, Tensor]:
        """``(inter, intra)`` over groups of images clustered together."""
        b, n, d = representations.shape
        per_group = max(self.global_clusters // self.local_clusters, 1)
        inter_terms, labels = [], []
        first_id = 0
        for start in range(0, b, per_group):
            group = representations[start : start + per_group].reshape(-1, d)
            centroids, group_labels = self._kmeans(group, self.global_clusters)
            k = centroids.shape[0]
            if k > 1:
                # Distance of every point to its nearest centroid other than its own.
                distances = torch.cdist(group, centroids)
                own = F.one_hot(group_labels, k).bool()
                others = distances.masked_fill(own, math.inf)
                inter_terms.append(others.min(dim=1).values.mean())
            labels.append(group_labels + first_id)
            first_id += k
        values, defined = cluster_singular_sums(
            representations.reshape(b * n, d), torch.cat(labels), first_id
        )
        values = values[defined]
        inter = torch.stack(inter_terms).mean() if inter_terms else values.new_zeros(())
        intra = values.mean() if values.numel() else values.new_zeros(())
        return inter, intra

    @staticmethod
    def _effective_rank(x: Tensor) -> Tensor:
        """``exp(entropy(s / sum(s))) / min(x.shape)`` for the singular values ``s`` of x."""
        singular_values = torch.linalg.svdvals(x)
        p = singular_values / (singular_values.sum() + 1e-12)
        entropy = -(p * torch.log(p + 1e-12)).sum()
        return entropy.exp() / min(x.shape)
