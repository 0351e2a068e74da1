"""W-MSE loss: MSE between whitened embeddings (Ermolov et al. 2021).

LightlySSL 1.6 whitens one sub-batch of one view at a time in Python loops (and through a
1x1 convolution). Here all sub-batches of all views and all whitening iterations are
whitened in one batched Cholesky factorisation and triangular solve, and the running
statistics are advanced in closed form by the same sequence of updates, so the values,
gradients and buffers equal LightlySSL's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class _BatchSizeError(ValueError, RuntimeError):
    """A batch that does not split into views or sub-batches (a RuntimeError in LightlySSL)."""


def norm_mse_loss(x0: Tensor, x1: Tensor) -> Tensor:
    """Mean squared error between L2-normalised rows: ``2 - 2 * mean_i cos(x0_i, x1_i)``.

    Args:
        x0: Shape (n, d).
        x1: Same shape.

    Returns:
        Scalar loss in [0, 4].

    Example:
        >>> norm_mse_loss(torch.ones(2, 3), -torch.ones(2, 3)).item()
        4.0
    """
    x0, x1 = F.normalize(x0), F.normalize(x1)
    return 2 - 2 * (x0 * x1).sum(dim=-1).mean()


class Whitening2d(nn.Module):
    """Batch whitening with a Cholesky factor (Ermolov et al., "Whitening for
    Self-Supervised Representation Learning", ICML 2021, https://arxiv.org/abs/2007.06346).

    In training, the batch is centred and multiplied by ``L^-1`` with ``L L^T`` the
    (shrunk) batch covariance, so the output has identity covariance; the gradient flows
    through the covariance. In eval mode with ``track_running_stats`` the running mean and
    covariance are used instead.

    Shapes: ``x`` of shape (batch_size, num_features) with batch_size > num_features (or
    ``eps > 0``); returns the same shape.

    Attributes:
        num_features: Number of features.
        momentum: Weight of the new batch in the running statistics.
        track_running_stats: Keep running statistics (and use them in eval mode).
        eps: Shrinkage of the covariance towards the identity: ``(1 - eps) C + eps I``.
        running_mean: Buffer of shape (1, num_features, 1, 1) (LightlySSL's layout).
        running_variance: Buffer of shape (num_features, num_features), the running
            covariance.

    Example:
        >>> whitening = Whitening2d(num_features=4)
        >>> out = whitening(torch.randn(32, 4))
        >>> torch.allclose(out.T @ out / 31, torch.eye(4), atol=1e-4)
        True
    """

    running_mean: Tensor
    running_variance: Tensor

    def __init__(
        self,
        num_features: int,
        momentum: float = 0.01,
        track_running_stats: bool = True,
        eps: float = 0,
    ) -> None:
        """Builds the layer.

        Args:
            num_features: Number of features; must be >= 1.
            momentum: Weight of the new batch in the running statistics, in [0, 1].
            track_running_stats: Keep running statistics (and use them in eval mode).
            eps: Shrinkage of the covariance towards the identity, in [0, 1].

        Raises:
            ValueError: If an argument is out of its range.
        """
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got num_features={num_features}.")
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got momentum={momentum}.")
        if not 0 <= eps <= 1:
            raise ValueError(f"eps must be in [0, 1], got eps={eps}.")
        self.num_features = num_features
        self.momentum = momentum
        self.track_running_stats = track_running_stats
        self.eps = eps
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(1, num_features, 1, 1))
            self.register_buffer("running_variance", torch.eye(num_features))

    def forward(self, x: Tensor) -> Tensor:
        """Whitens a batch.

        Args:
            x: Shape (batch_size, num_features).

        Returns:
            The whitened batch, same shape.

        Raises:
            ValueError: If ``x`` does not have shape (batch_size, num_features).
        """
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"x must have shape (batch_size, {self.num_features}), got {tuple(x.shape)}."
            )
        return self.whiten_groups(x.unsqueeze(0)).squeeze(0)

    def whiten_groups(self, x: Tensor) -> Tensor:
        """Whitens ``G`` batches at once, as ``G`` calls of :meth:`forward` in order would.

        Each group is whitened with its own statistics (or the running ones in eval mode);
        in training the running statistics take ``G`` momentum updates, group 0 first.

        Args:
            x: Shape (G, batch_size, num_features).

        Returns:
            The whitened groups, same shape.
        """
        groups, n, f = x.shape
        use_running = self.track_running_stats and not self.training
        if use_running:
            mean = self.running_mean.view(1, 1, f).to(x.dtype)
            centered = x - mean
            cov = self.running_variance.to(x.dtype).expand(groups, f, f)
        else:
            mean = x.mean(dim=1, keepdim=True)
            centered = x - mean
            cov = centered.mT @ centered / (n - 1)
        eye = torch.eye(f, dtype=x.dtype, device=x.device)
        factor = torch.linalg.cholesky((1 - self.eps) * cov + self.eps * eye)
        # Rows times L^-T, i.e. L^-1 applied to every centred sample, without forming L^-1.
        whitened = torch.linalg.solve_triangular(factor, centered.mT, upper=False).mT
        if self.training and self.track_running_stats:
            self._update_running_stats(mean.detach().squeeze(1), cov.detach())
        return whitened

    @torch.no_grad()
    def _update_running_stats(self, means: Tensor, covs: Tensor) -> None:
        """Applies ``r <- (1 - m) r + m s`` for the statistics ``s`` of each group in turn.

        After ``G`` updates ``r_G = (1 - m)^G r_0 + sum_g m (1 - m)^(G - 1 - g) s_g``, which
        is computed in one weighted sum.

        Args:
            means: Group means, shape (G, num_features).
            covs: Group covariances, shape (G, num_features, num_features).
        """
        groups = means.shape[0]
        keep = 1.0 - self.momentum
        powers = torch.arange(groups - 1, -1, -1, dtype=means.dtype, device=means.device)
        weights = self.momentum * keep**powers  # (G,)
        decay = keep**groups
        new_mean = decay * self.running_mean.view(-1) + weights @ means
        new_cov = decay * self.running_variance + torch.einsum("g,gij->ij", weights, covs)
        self.running_mean.copy_(new_mean.view_as(self.running_mean))
        self.running_variance.copy_(new_cov)


class WMSELoss(nn.Module):
    """W-MSE loss (Ermolov et al., "Whitening for Self-Supervised Representation Learning",
    ICML 2021, https://arxiv.org/abs/2007.06346).

    The embeddings of each view are whitened (:class:`Whitening2d`) in random sub-batches
    of ``w_size`` images, all views of a sub-batch with the same images, and ``loss_fn``
    (by default :func:`norm_mse_loss`) is averaged over all pairs of views. Whitening
    removes the collapsed solutions without negatives. With ``w_iter > 1`` the whole
    procedure is repeated with new random sub-batches and the losses averaged.

    Shapes: ``input`` of shape (batch_size * num_samples, embedding_dim): view 0 of every
    image, then view 1, etc.; returns a scalar.

    Attributes:
        whitening: The :class:`Whitening2d` layer (with the running statistics).
        w_iter: Number of whitening iterations.
        w_size: Number of images per whitened sub-batch.
        loss_f: Loss between two batches of whitened embeddings.
        num_samples: Number of views per image.
        num_pairs: Number of pairs of views, ``num_samples * (num_samples - 1) / 2``.

    Example:
        >>> loss_fn = WMSELoss(embedding_dim=4, w_size=8, num_samples=2)
        >>> h = torch.randn(2 * 16, 4, requires_grad=True)  # 16 images, 2 views each
        >>> loss = loss_fn(h)
        >>> loss.backward()
    """

    def __init__(
        self,
        embedding_dim: int = 128,
        momentum: float = 0.01,
        eps: float = 0.0,
        track_running_stats: bool = True,
        w_iter: int = 1,
        w_size: int = 256,
        loss_fn: Callable[[Tensor, Tensor], Tensor] = norm_mse_loss,
        num_samples: int = 2,
    ) -> None:
        """Builds the loss.

        Args:
            embedding_dim: Dimension of the embeddings.
            momentum: Weight of the new batch in the whitening's running statistics.
            eps: Shrinkage of the covariance towards the identity.
            track_running_stats: Keep running statistics (used in eval mode).
            w_iter: Number of whitening iterations; must be >= 1.
            w_size: Images per whitened sub-batch; at least ``2 * embedding_dim`` (a
                smaller sub-batch gives an unstable covariance).
            loss_fn: Loss between two batches of whitened embeddings.
            num_samples: Number of views per image; must be >= 2.

        Raises:
            ValueError: If an argument is out of its range.
        """
        super().__init__()
        self.whitening = Whitening2d(
            num_features=embedding_dim,
            momentum=momentum,
            eps=eps,
            track_running_stats=track_running_stats,
        )
        if embedding_dim * 2 > w_size:
            raise ValueError(
                "w_size should be at least twice the size of embedding_dim to avoid "
                f"instability, got w_size={w_size} and embedding_dim={embedding_dim}."
            )
        if w_iter < 1:
            raise ValueError(f"w_iter must be >= 1, got w_iter={w_iter}.")
        if num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 (pairs of views), got {num_samples}.")
        self.w_iter = w_iter
        self.w_size = w_size
        self.loss_f = loss_fn
        self.num_samples = num_samples
        self.num_pairs = num_samples * (num_samples - 1) // 2

    def forward(self, input: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            input: Shape (batch_size * num_samples, embedding_dim), views stacked along
                the batch: rows ``[v * batch_size, (v + 1) * batch_size)`` hold view ``v``.

        Returns:
            Scalar loss, averaged over iterations and pairs of views.

        Raises:
            ValueError: If the shape is wrong, the number of rows is not a multiple of
                ``num_samples``, or the batch size is smaller than or not a multiple of
                ``w_size`` (the two divisibility errors are also RuntimeErrors, as in
                LightlySSL).
        """
        dim = self.whitening.num_features
        if input.ndim != 2 or input.shape[1] != dim:
            raise ValueError(
                f"input must have shape (batch_size * num_samples, {dim}), got "
                f"{tuple(input.shape)}."
            )
        if input.shape[0] % self.num_samples != 0:
            raise _BatchSizeError(
                f"input batch size must be divisible by num_samples={self.num_samples}, got "
                f"{input.shape[0]} rows."
            )
        bs = input.shape[0] // self.num_samples
        if bs < self.w_size:
            raise ValueError(
                f"batch size must be greater than or equal to w_size={self.w_size}, got {bs}."
            )
        if bs % self.w_size != 0:
            raise _BatchSizeError(
                f"batch size must be a multiple of w_size={self.w_size}, got {bs}."
            )
        # One random split of the images into sub-batches per iteration (LightlySSL's draws:
        # torch.randperm on the CPU generator, one per iteration).
        perms = torch.stack([torch.randperm(bs) for _ in range(self.w_iter)]).to(input.device)
        chunks = perms.view(self.w_iter, bs // self.w_size, self.w_size)
        views = input.view(self.num_samples, bs, dim)
        # (S, I, C, W, D) -> (I, C, S, W, D): LightlySSL whitens iteration by iteration,
        # sub-batch by sub-batch, view by view; the running statistics follow this order.
        groups = views[:, chunks].permute(1, 2, 0, 3, 4)
        whitened = self.whitening.whiten_groups(groups.reshape(-1, self.w_size, dim))
        whitened = whitened.view(self.w_iter, -1, self.num_samples, self.w_size, dim)
        # Back to the original image order of every view: (I, S, bs, D).
        shuffled = whitened.permute(0, 2, 1, 3, 4).reshape(self.w_iter, self.num_samples, bs, dim)
        z = shuffled.gather(2, perms.argsort(dim=1)[:, None, :, None].expand_as(shuffled))

        loss = input.new_zeros(())
        for iteration in z:
            for i in range(self.num_samples - 1):
                for j in range(i + 1, self.num_samples):
                    loss = loss + self.loss_f(iteration[i], iteration[j])
        return loss / (self.w_iter * self.num_pairs)
