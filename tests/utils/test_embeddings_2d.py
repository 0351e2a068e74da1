from __future__ import annotations

import numpy as np
import pytest
from lightly.utils.embeddings_2d import PCA as LightlyPCA
from lightly.utils.embeddings_2d import fit_pca as lightly_fit_pca

from fastssl.utils.embeddings_2d import PCA, fit_pca


def _data(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Distinct variances per direction, so that the components are well defined.
    scales = np.linspace(3.0, 0.5, d)
    mixing = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return ((rng.normal(size=(n, d)) * scales) @ mixing + 5.0).astype(np.float32)


def _align_signs(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Flips our components to the sign lightly's eigen-solver happened to pick."""
    signs = np.sign(np.sum(ours * theirs, axis=0))
    return ours * signs


@pytest.mark.parametrize(("n", "d", "k"), [(50, 2, 2), (100, 5, 2), (80, 8, 3), (30, 4, 4)])
def test_matches_lightly_up_to_component_signs(n: int, d: int, k: int) -> None:
    x = _data(n, d)
    ours = PCA(n_components=k).fit(x)
    theirs = LightlyPCA(n_components=k).fit(x)
    np.testing.assert_array_equal(ours.mean, theirs.mean)
    assert ours.w is not None and ours.w.shape == (d, d)
    np.testing.assert_allclose(_align_signs(ours.w, theirs.w), theirs.w, atol=1e-5)
    projected, expected = ours.transform(x), theirs.transform(x)
    assert projected.dtype == expected.dtype == np.float32
    assert projected.shape == expected.shape == (n, k)
    np.testing.assert_allclose(_align_signs(projected, expected), expected, rtol=1e-4, atol=1e-4)


def test_components_are_ordered_by_variance() -> None:
    x = _data(400, 4, seed=1)
    projected = PCA(n_components=4).fit(x).transform(x)
    variances = projected.var(axis=0)
    assert np.all(np.diff(variances) < 0)
    # Projections onto orthonormal components are uncorrelated.
    covariance = np.cov(projected.T)
    np.testing.assert_allclose(covariance - np.diag(np.diag(covariance)), 0, atol=1e-3)


def test_transform_before_fit_raises() -> None:
    with pytest.raises(ValueError, match="not fitted"):
        PCA().transform(np.zeros((2, 2), dtype=np.float32))


@pytest.mark.parametrize("fraction", [None, 0.5, 1.0])
def test_fit_pca_uses_the_same_random_subset_as_lightly(fraction: float | None) -> None:
    x = _data(60, 4, seed=2)
    np.random.seed(3)
    ours = fit_pca(x, n_components=2, fraction=fraction)
    np.random.seed(3)
    theirs = lightly_fit_pca(x, n_components=2, fraction=fraction)
    np.testing.assert_allclose(ours.mean, theirs.mean, rtol=1e-6)
    np.testing.assert_allclose(_align_signs(ours.w, theirs.w), theirs.w, atol=1e-5)
    if fraction == 0.5:  # a subset: another mean than the full data's
        assert not np.allclose(ours.mean, x.mean(axis=0))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_fit_pca_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction must be in"):
        fit_pca(_data(10, 2), fraction=fraction)
