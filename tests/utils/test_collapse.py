"""Collapse statistics: effective rank and std of L2-normalised embeddings, against the
naive formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastssl.utils.collapse import collapse_statistics, effective_rank


def naive_effective_rank(z: np.ndarray) -> float:
    """Roy & Vetterli 2007, written out: exp of the entropy of s / sum(s)."""
    s = np.linalg.svd(z.astype(np.float64), compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def naive_std(z: np.ndarray) -> float:
    """Mean over dimensions of the unbiased std of the rows scaled to unit length."""
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    return float(unit.std(axis=0, ddof=1).mean())


def _gaussian(b: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("d", [1, 4, 64])
def test_identity_has_full_rank(d: int) -> None:
    assert float(effective_rank(torch.eye(d))) == pytest.approx(d, rel=1e-6)


@pytest.mark.parametrize("shape", [(8, 4), (16, 32), (256, 512)])
def test_rank_one_matrix_has_rank_one(shape: tuple[int, int]) -> None:
    u, v = _gaussian(shape[0], 1, 1), _gaussian(1, shape[1], 2)
    assert float(effective_rank(u @ v)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("shape", [(3, 2), (32, 8), (100, 64), (64, 100)])
def test_effective_rank_matches_the_naive_formula(shape: tuple[int, int]) -> None:
    z = _gaussian(*shape, seed=shape[0])
    expected = naive_effective_rank(z.numpy())
    assert float(effective_rank(z)) == pytest.approx(expected, rel=1e-5)
    assert 1.0 <= float(effective_rank(z)) <= min(shape)


@pytest.mark.parametrize(
    ("singular_values", "expected"),
    [
        ((1.0, 1.0), 2.0),
        ((3.0, 1.0), math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))),
        ((1.0, 0.0, 0.0), 1.0),
    ],
)
def test_effective_rank_of_a_diagonal_matrix(
    singular_values: tuple[float, ...], expected: float
) -> None:
    z = torch.diag(torch.tensor(singular_values))
    assert float(effective_rank(z)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_effective_rank_ignores_scale(scale: float) -> None:
    z = _gaussian(32, 16)
    assert float(effective_rank(z * scale)) == pytest.approx(float(effective_rank(z)), rel=1e-5)


def test_zero_and_empty_matrices_have_rank_zero() -> None:
    assert float(effective_rank(torch.zeros(8, 4))) == 0.0
    assert float(effective_rank(torch.zeros(0, 4))) == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_effective_rank_dtype_and_no_gradient(dtype: torch.dtype) -> None:
    z = _gaussian(16, 8).to(dtype).requires_grad_(True)
    rank = effective_rank(z)
    assert not rank.requires_grad
    assert rank.dtype == torch.promote_types(dtype, torch.float32)


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4)])
def test_effective_rank_rejects_other_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"shape \(B, D\)"):
        effective_rank(torch.randn(shape))


def test_effective_rank_rejects_integers() -> None:
    with pytest.raises(ValueError, match="floating point"):
        effective_rank(torch.ones(2, 2, dtype=torch.long))


@pytest.mark.parametrize("shape", [(8, 4), (64, 32)])
def test_collapsed_embeddings(shape: tuple[int, int]) -> None:
    """Every image mapped to the same vector: std 0, effective rank 1."""
    z = _gaussian(1, shape[1]).expand(shape).contiguous() * 5.0
    stats = collapse_statistics(z)
    assert stats["std"] == pytest.approx(0.0, abs=1e-6)
    assert stats["effective_rank"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("d", [16, 64, 256])
def test_isotropic_gaussian_std_is_one_over_sqrt_d(d: int) -> None:
    z = _gaussian(20_000, d)
    stats = collapse_statistics(z)
    assert stats["std"] == pytest.approx(d**-0.5, rel=0.02)
    assert stats["std"] == pytest.approx(naive_std(z.numpy()), rel=1e-4)
    # Many more samples than dimensions: nearly equal singular values, rank close to D.
    assert stats["effective_rank"] > 0.95 * d


def test_dimensional_collapse_shows_in_the_rank_not_the_std() -> None:
    """Embeddings in a 2-d subspace of 64 dimensions: the std stays far from 0, the
    effective rank drops to about 2."""
    z = _gaussian(4096, 2) @ _gaussian(2, 64, seed=1)
    stats = collapse_statistics(z)
    assert stats["std"] > 0.05
    assert stats["effective_rank"] < 2.0 + 1e-6
    assert stats["effective_rank"] > 1.5
