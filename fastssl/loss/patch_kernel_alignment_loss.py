"""Patch kernel alignment (PaKa) loss, with LightlySSL 1.6's interface.

- PaKa: "Patch-Level Kernel Alignment for Dense Self-Supervised Learning", 2025,
  https://arxiv.org/abs/2509.05606

For each image the loss compares the *relations* between its patch tokens in the student
and in the teacher, through the Centered Kernel Alignment of their linear kernels::

    K_s = Z_s Z_s^T,  K_t = Z_t Z_t^T,  H = I - 11^T / N
    CKA = <H K_s H, H K_t H>_F / (||H K_s H||_F ||H K_t H||_F),   loss = 1 - CKA

CKA is invariant to isotropic scaling and orthogonal transforms of the features, so the
loss asks for the same grouping of regions, not the same features per patch.

Two identities make it cheap. For a linear kernel, double centering is centering the
features: ``H Z Z^T H = (H Z)(H Z)^T``, with the means taken over valid tokens only. And
``<A A^T, B B^T>_F = ||A^T B||_F^2``, so the inner products can be computed from the
(N x N) kernels or from the (D x D) cross-covariances, whichever is smaller.
"""

from __future__ import annotations

from torch import Tensor, nn

from fastssl.loss.dense_relational_utils import _subsample_tokens, _validate_dense_inputs

# The squared Frobenius norms are clamped to this before the square root: an image whose
# kernel is (nearly) constant has norm 0, and sqrt'(0) = inf would make NaN gradients.
# A no-op for any non-degenerate image.
_EPS = 1e-6


def _center_valid(features: Tensor, valid: Tensor) -> Tensor:
    """Subtracts the mean over valid tokens and zeroes the ignored tokens, (B, N, D)."""
    weights = valid.unsqueeze(-1)  # (B, N, 1)
    count = valid.sum(dim=1).clamp(min=1.0)[:, None, None]
    mean = (features * weights).sum(dim=1, keepdim=True) / count
    return (features - mean) * weights


def _kernel_inner_products(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``<K_s, K_t>``, ``<K_s, K_s>`` and ``<K_t, K_t>`` (each (B,)) of centered (B, N, D)
    features, from the N x N kernels or the D x D cross-covariances, whichever is cheaper.
    """
    num_tokens, dim = student.shape[1], student.shape[2] + teacher.shape[2]
    dims = (1, 2)
    if num_tokens <= dim:  # N^2 (D_s + D_t) work
        k_s = student @ student.mT
        k_t = teacher @ teacher.mT
        return (k_s * k_t).sum(dims), k_s.square().sum(dims), k_t.square().sum(dims)
    # (D_s + D_t)^2 N work
    cross = student.mT @ teacher
    return (
        cross.square().sum(dims),
        (student.mT @ student).square().sum(dims),
        (teacher.mT @ teacher).square().sum(dims),
    )


class PatchKernelAlignmentLoss(nn.Module):
    """Patch kernel alignment loss (PaKa, 2025, https://arxiv.org/abs/2509.05606).

    ``mean_b (1 - CKA(K_s[b], K_t[b]))`` over the images (see the module docstring),
    computed in float32: in half precision the centered kernel products can underflow to 0,
    whose square root has an infinite gradient.

    Shapes: ``student_features`` and ``teacher_features`` (B, N, D), already aligned
    token by token (same view, e.g. iBOT-style masking, or resampled onto a common grid
    with :func:`fastssl.loss.dense_relational_utils.roi_resample_to_grid`); optional bool
    ``mask`` (B, N), True = ignore the token. Returns a scalar. The teacher is detached.

    Images with fewer than two valid tokens are left out of the mean; if no image is left
    the result is a zero connected to the student's graph (so ``backward`` still works).

    Attributes:
        max_tokens: If set and N > max_tokens, keep ``max_tokens`` random tokens per image
            (valid ones first) to bound the O(B N^2 D) cost.

    Example:
        >>> import torch
        >>> loss_fn = PatchKernelAlignmentLoss(max_tokens=64)
        >>> student = torch.randn(2, 196, 32, requires_grad=True)  # (B, N, D)
        >>> teacher = torch.randn(2, 196, 32)
        >>> loss = loss_fn(student, teacher)
    """

    def __init__(self, max_tokens: int | None = None) -> None:
        """Builds the loss.

        Args:
            max_tokens: Tokens kept per image (None keeps all), >= 2.

        Raises:
            ValueError: If ``max_tokens < 2``.
        """
        super().__init__()
        if max_tokens is not None and max_tokens < 2:
            raise ValueError(
                f"PatchKernelAlignmentLoss 'max_tokens' must be >= 2 or None, got "
                f"max_tokens={max_tokens}."
            )
        self.max_tokens = max_tokens

    def forward(
        self, student_features: Tensor, teacher_features: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        """Computes the loss.

        Args:
            student_features: Shape (B, N, D).
            teacher_features: Shape (B, N, D); detached.
            mask: Optional bool (B, N), True = ignore the token.

        Returns:
            Scalar float32 loss: the mean over images with at least two valid tokens.

        Raises:
            ValueError: If a shape or the mask's dtype is invalid.
        """
        _validate_dense_inputs(student_features, teacher_features, mask)
        student, teacher = student_features, teacher_features.detach()
        # 1 for the tokens that count, 0 for the ignored ones.
        valid = student.new_ones(student.shape[:2]) if mask is None else (~mask).to(student)
        if self.max_tokens is not None and student.shape[1] > self.max_tokens:
            student, teacher, valid = _subsample_tokens(student, teacher, valid, self.max_tokens)

        valid = valid.float()
        centered_s = _center_valid(student.float(), valid)
        centered_t = _center_valid(teacher.float(), valid)
        hsic_st, hsic_ss, hsic_tt = _kernel_inner_products(centered_s, centered_t)
        cka = hsic_st / (hsic_ss.clamp_min(_EPS).sqrt() * hsic_tt.clamp_min(_EPS).sqrt())

        # Average over the images with >= 2 valid tokens. Masking instead of branching on
        # "any image valid" avoids a host sync; with no valid image the sum is a zero that
        # still depends on the student.
        counted = (valid.sum(dim=1) >= 2).float()
        return ((1.0 - cka) * counted).sum() / counted.sum().clamp(min=1.0)
