"""PaKa tests. Token subsampling draws ``torch.rand(B, N)`` like LightlySSL 1.6 (same RNG
consumption, checked below), so both sides are seeded identically and compared."""

from __future__ import annotations

import re

import pytest
import torch
from lightly.loss import PatchKernelAlignmentLoss as LightlyPatchKernelAlignmentLoss

from fastssl.loss.patch_kernel_alignment_loss import PatchKernelAlignmentLoss


def _features(b: int, n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(b, n, d, generator=g)
    # Related features: the CKA is neither ~0 nor ~1.
    student = teacher @ torch.randn(d, d, generator=g) + torch.randn(b, n, d, generator=g)
    return student.requires_grad_(), teacher


def _mask(b: int, n: int, seed: int) -> torch.Tensor:
    mask = torch.rand(b, n, generator=torch.Generator().manual_seed(seed)) < 0.3
    mask[0] = True
    mask[0, 0] = False  # one valid token only: this image is left out
    return mask


# (10, 4): N > D_s + D_t, computed from D x D covariances; (6, 8): from N x N kernels.
@pytest.mark.parametrize(("b", "n", "d"), [(3, 10, 4), (2, 6, 8), (4, 3, 2)])
@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("max_tokens", [None, 2, 5])
def test_matches_lightly(b: int, n: int, d: int, use_mask: bool, max_tokens: int | None) -> None:
    student, teacher = _features(b, n, d, seed=n * d)
    mask = _mask(b, n, seed=b) if use_mask else None
    torch.manual_seed(0)
    ours = PatchKernelAlignmentLoss(max_tokens)(student, teacher, mask)
    after_ours = torch.rand(2)
    torch.manual_seed(0)
    theirs = LightlyPatchKernelAlignmentLoss(max_tokens)(student, teacher, mask)
    assert torch.equal(after_ours, torch.rand(2))  # the same random numbers were drawn
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        torch.autograd.grad(ours, student)[0],
        torch.autograd.grad(theirs, student)[0],
        rtol=1e-4,
        atol=1e-6,
    )


def test_half_precision_is_computed_in_float32_like_lightly() -> None:
    student, teacher = _features(2, 12, 4, seed=1)
    student = student.detach().bfloat16().requires_grad_()
    ours = PatchKernelAlignmentLoss()(student, teacher.bfloat16())
    theirs = LightlyPatchKernelAlignmentLoss()(student, teacher.bfloat16())
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    (grad,) = torch.autograd.grad(ours, student)
    assert grad.dtype == torch.bfloat16 and torch.isfinite(grad).all()


def test_matches_cka_formula() -> None:
    """1 - <HKsH, HKtH> / (|HKsH| |HKtH|) per image with the explicit centering matrix H."""
    student, teacher = _features(3, 7, 5, seed=2)
    loss = PatchKernelAlignmentLoss()(student, teacher)
    n = student.shape[1]
    h = torch.eye(n) - torch.ones(n, n) / n
    per_image = []
    for s, t in zip(student.detach(), teacher, strict=True):
        k_s, k_t = h @ (s @ s.T) @ h, h @ (t @ t.T) @ h
        cka = (k_s * k_t).sum() / (k_s.norm() * k_t.norm())
        per_image.append(1 - cka)
    torch.testing.assert_close(loss.detach(), torch.stack(per_image).mean(), rtol=1e-4, atol=1e-6)


def test_masked_tokens_are_dropped() -> None:
    """A mask gives the loss of the images restricted to their valid tokens."""
    student, teacher = _features(2, 8, 3, seed=3)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, 5:] = True
    mask[1, :2] = True
    loss = PatchKernelAlignmentLoss()(student, teacher, mask)
    fn = PatchKernelAlignmentLoss()
    expected = 0.5 * (fn(student[:1, :5], teacher[:1, :5]) + fn(student[1:, 2:], teacher[1:, 2:]))
    torch.testing.assert_close(loss, expected)


def test_invariant_to_scaling_and_rotation() -> None:
    _, teacher = _features(2, 9, 4, seed=4)
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(5)))
    student = (3.0 * teacher @ rotation + 1.0).requires_grad_()  # + 1: centering removes it
    loss = PatchKernelAlignmentLoss()(student, teacher)
    torch.testing.assert_close(loss, torch.zeros(()), atol=1e-5, rtol=0)


def test_no_valid_image_gives_a_differentiable_zero() -> None:
    student, teacher = _features(2, 4, 3, seed=6)
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[:, 0] = False  # one valid token per image
    loss = PatchKernelAlignmentLoss()(student, teacher, mask)
    assert loss.item() == 0.0 and loss.requires_grad
    (grad,) = torch.autograd.grad(loss, student)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_teacher_is_detached() -> None:
    student, teacher = _features(2, 5, 3, seed=7)
    teacher.requires_grad_()
    loss = PatchKernelAlignmentLoss()(student, teacher)
    assert torch.autograd.grad(loss, teacher, allow_unused=True)[0] is None


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="'max_tokens' must be >= 2 or None, got max_tokens=1"):
        PatchKernelAlignmentLoss(max_tokens=1)
    loss_fn = PatchKernelAlignmentLoss()
    x = torch.zeros(2, 4, 3)
    for args, message in [
        ((x[0], x), "student_features must have shape (B, N, D), got (4, 3)"),
        ((x, x[0]), "teacher_features must have shape (B, N, D), got (4, 3)"),
        ((x, x[:, :3]), "same shape, got (2, 4, 3) and (2, 3, 3)"),
        ((x, x, torch.zeros(2, 3, dtype=torch.bool)), "mask must have shape (2, 4), got (2, 3)"),
        ((x, x, torch.zeros(2, 4)), "mask must have dtype torch.bool, got torch.float32"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            loss_fn(*args)
