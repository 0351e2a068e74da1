"""Projection of embeddings to a few dimensions for visualisation (LightlySSL's
``lightly.utils.embeddings_2d``), with a small PCA in numpy (no scikit-learn needed).

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32)
    >>> fit_pca(x, n_components=2).transform(x).shape
    (100, 2)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray


class PCA:
    """Principal component analysis: projects data onto the eigenvectors of its covariance
    with the largest eigenvalues.

    The sign of each component is arbitrary (as in every PCA): ``-w[:, i]`` is as valid as
    ``w[:, i]``.

    Args:
        n_components: Number of components :meth:`transform` keeps.
        eps: Added to the centered data before the projection, as LightlySSL does: a
            constant shift of every projection, negligible for data of usual scale (it
            cancels in the covariance).

    Attributes:
        mean: Mean of the fitted data, shape (D,); None before :meth:`fit`.
        w: Eigenvectors of the covariance as columns, by decreasing eigenvalue, shape
            (D, D); None before :meth:`fit`.
    """

    def __init__(self, n_components: int = 2, eps: float = 1e-10) -> None:
        self.n_components = n_components
        self.eps = eps
        self.mean: NDArray[np.float32] | None = None
        self.w: NDArray[np.float32] | None = None

    def fit(self, X: NDArray[np.float32]) -> PCA:
        """Fits the components to ``X`` of shape (N, D) (cast to float32).

        Returns:
            ``self``, fitted.
        """
        X = np.asarray(X, dtype=np.float32)
        self.mean = X.mean(axis=0)
        centered = (X - self.mean + self.eps).astype(np.float32)
        # Unbiased covariance divided once more by N, as LightlySSL does; the scale does
        # not change the eigenvectors. eigh suits the symmetric matrix: its eigenvalues
        # are real and it returns them in ascending order.
        covariance = np.atleast_2d(np.cov(centered.T)) / X.shape[0]
        _, vectors = np.linalg.eigh(covariance)
        self.w = vectors[:, ::-1]
        return self

    def transform(self, X: NDArray[np.float32]) -> NDArray[np.float32]:
        """Projects ``X`` of shape (N, D) onto the first ``n_components`` components.

        Returns:
            float32 array of shape (N, min(n_components, D)).

        Raises:
            ValueError: If the PCA is not fitted.
        """
        if self.mean is None or self.w is None:
            raise ValueError("PCA not fitted yet. Call fit() before transform().")
        centered = (np.asarray(X) - self.mean + self.eps).astype(np.float32)
        return np.asarray(centered @ self.w[:, : self.n_components], dtype=np.float32)


def fit_pca(
    embeddings: NDArray[np.float32],
    n_components: int = 2,
    fraction: float | None = None,
) -> PCA:
    """Fits a :class:`PCA` to all embeddings or to a random fraction of them.

    The subset is drawn with numpy's global random state (``np.random.seed`` makes it
    reproducible), so fitting a large dataset stays cheap.

    Args:
        embeddings: Array of shape (N, D).
        n_components: Number of components the PCA keeps.
        fraction: Fraction in (0, 1] of the embeddings to fit on (None: all of them).

    Returns:
        The fitted PCA.

    Raises:
        ValueError: If ``fraction`` is not in (0, 1].
    """
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1] but was {fraction}.")
    n = len(embeddings)
    keep = n if fraction is None else min(n, int(n * fraction))
    subset = embeddings[np.random.permutation(n)][:keep]
    return PCA(n_components=n_components).fit(subset)
