from __future__ import annotations

import re

import pytest
import torch
from lightly.loss import IBOTPatchLoss as LightlyIBOTPatchLoss
from lightly.loss import IBOTPlusPlusPatchLoss as LightlyIBOTPlusPlusPatchLoss
from torch import nn

from fastssl.loss.ibot_loss import IBOTPatchLoss, IBOTPlusPlusPatchLoss
from fastssl.models.modules.center import Center
from fastssl.utils import dist
from tests._distributed import run_distributed


def _mask(batch: int, h: int, w: int, p: float, g: torch.Generator) -> torch.Tensor:
    mask = torch.rand(batch, h, w, generator=g) < p
    mask[0] = False  # an image without masked tokens
    mask[-1, 0, 0] = True
    return mask


def _outputs(n: int, dim: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.randn(n, dim, generator=g).requires_grad_(),
        torch.randn(n, dim, generator=g).requires_grad_(),
    )


def _assert_value_and_grads(
    ours: torch.Tensor, theirs: torch.Tensor, inputs: tuple[torch.Tensor, ...]
) -> None:
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    for a, b in zip(
        torch.autograd.grad(ours, inputs), torch.autograd.grad(theirs, inputs), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("batch", "h", "w", "dim"), [(3, 4, 4, 8), (5, 2, 3, 16), (2, 1, 1, 4)])
@pytest.mark.parametrize(
    "kwargs", [{}, {"teacher_temp": 0.2, "student_temp": 0.3, "center_momentum": 0.5}]
)
def test_patch_loss_matches_lightly_over_steps(
    batch: int, h: int, w: int, dim: int, kwargs: dict
) -> None:
    g = torch.Generator().manual_seed(batch * h * w)
    ours = IBOTPatchLoss(output_dim=dim, **kwargs)
    theirs = LightlyIBOTPatchLoss(output_dim=dim, **kwargs)
    for step in range(3):
        mask = _mask(batch, h, w, 0.5, g)
        teacher, student = _outputs(int(mask.sum()), dim, g)
        temp = 0.07 if step == 1 else None  # an explicit teacher_temp on one step
        _assert_value_and_grads(
            ours(teacher, student, mask, teacher_temp=temp),
            theirs(teacher, student, mask, teacher_temp=temp),
            (teacher, student),
        )
        torch.testing.assert_close(ours.center.value, theirs.center.value)
    assert ours.state_dict().keys() == theirs.state_dict().keys() == {"center.center"}
    assert isinstance(ours.center, Center)


def test_patch_loss_is_the_per_image_mean_cross_entropy() -> None:
    """iBOT Eq. (masked image modelling term): mean over images of the mean masked CE."""
    g = torch.Generator().manual_seed(0)
    mask = _mask(4, 3, 3, 0.5, g)
    teacher, student = _outputs(int(mask.sum()), 6, g)
    loss_fn = IBOTPatchLoss(output_dim=6, teacher_temp=0.5, student_temp=0.25)
    loss_fn.center.center.copy_(torch.randn(1, 6, generator=g))
    center = loss_fn.center.value.clone()
    loss = loss_fn(teacher, student, mask)

    per_image, row = [], 0
    for b in range(mask.shape[0]):
        terms = []
        for _ in range(int(mask[b].sum())):
            p = torch.softmax((teacher[row] - center[0]) / 0.5, dim=0)
            log_q = torch.log_softmax(student[row] / 0.25, dim=0)
            terms.append(-(p * log_q).sum())
            row += 1
        per_image.append(torch.stack(terms).mean() if terms else torch.zeros(()))
    torch.testing.assert_close(loss, torch.stack(per_image).mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss_fn.center.value, 0.9 * center + 0.1 * teacher.mean(0))


@pytest.mark.parametrize(
    ("layout", "mask_shape"),
    [("3d", None), ("3d", "bhw"), ("3d", "bn"), ("2d", "bhw"), ("2d", "bn")],
)
@pytest.mark.parametrize("visible_loss_weight", [1.0, 0.0, 2.5])
def test_plus_plus_matches_lightly(
    layout: str, mask_shape: str | None, visible_loss_weight: float
) -> None:
    g = torch.Generator().manual_seed(7)
    batch, h, w, dim = 3, 2, 4, 10
    ours = IBOTPlusPlusPatchLoss(output_dim=dim, center_momentum=0.8)
    theirs = LightlyIBOTPlusPlusPatchLoss(output_dim=dim, center_momentum=0.8)
    for _ in range(2):
        teacher = torch.randn(batch, h * w, dim, generator=g)
        student = torch.randn(batch, h * w, dim, generator=g)
        if layout == "2d":
            teacher, student = teacher.flatten(0, 1), student.flatten(0, 1)
        teacher.requires_grad_()
        student.requires_grad_()
        mask = _mask(batch, h, w, 0.4, g)
        mask[1] = True  # an image without visible tokens
        if mask_shape == "bn":
            mask = mask.flatten(1)
        kwargs = {"visible_loss_weight": visible_loss_weight}
        _assert_value_and_grads(
            ours(teacher, student, None if mask_shape is None else mask, **kwargs),
            theirs(teacher, student, None if mask_shape is None else mask, **kwargs),
            (teacher, student),
        )
        torch.testing.assert_close(ours.center.value, theirs.center.value)


def test_plus_plus_without_visible_weight_is_ibot_on_the_masked_tokens() -> None:
    g = torch.Generator().manual_seed(8)
    teacher, student = torch.randn(4, 9, 5, generator=g), torch.randn(4, 9, 5, generator=g)
    mask = _mask(4, 3, 3, 0.5, g)
    plus_plus = IBOTPlusPlusPatchLoss(output_dim=5)(teacher, student, mask, visible_loss_weight=0)
    ibot = IBOTPatchLoss(output_dim=5)(teacher[mask.flatten(1)], student[mask.flatten(1)], mask)
    torch.testing.assert_close(plus_plus, ibot)
    # Without a mask: the plain mean cross-entropy over all tokens.
    no_mask = IBOTPlusPlusPatchLoss(output_dim=5)(teacher, student)
    all_masked = IBOTPatchLoss(output_dim=5)(
        teacher.flatten(0, 1), student.flatten(0, 1), torch.ones(4, 3, 3, dtype=torch.bool)
    )
    torch.testing.assert_close(no_mask, all_masked)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="'teacher_temp' must be > 0, got teacher_temp=0"):
        IBOTPatchLoss(teacher_temp=0)
    with pytest.raises(ValueError, match="Unknown mode 'max'"):
        IBOTPlusPlusPatchLoss(center_mode="max")
    loss_fn = IBOTPatchLoss(output_dim=4)
    mask = torch.zeros(2, 2, 2, dtype=torch.bool)
    mask[0, 0] = True  # 2 masked tokens
    with pytest.raises(ValueError, match=re.escape("2 masked tokens for 3 rows")):
        loss_fn(torch.randn(3, 4), torch.randn(3, 4), mask)
    with pytest.raises(ValueError, match=re.escape("same shape (M, K), got (2, 4) and (2, 3)")):
        loss_fn(torch.randn(2, 4), torch.randn(2, 3), mask)
    with pytest.raises(ValueError, match=re.escape("mask must have shape (B, H, W), got (2, 4)")):
        loss_fn(torch.randn(2, 4), torch.randn(2, 4), mask.flatten(1))

    plus = IBOTPlusPlusPatchLoss(output_dim=4)
    with pytest.raises(ValueError, match="mask is required"):
        plus(torch.randn(6, 4), torch.randn(6, 4))
    with pytest.raises(ValueError, match="7 rows, which do not split into the batch size 2"):
        plus(torch.randn(7, 4), torch.randn(7, 4), mask)
    with pytest.raises(ValueError, match=re.escape("with B=2 and N=3 tokens, got (2, 2, 2)")):
        plus(torch.randn(2, 3, 4), torch.randn(2, 3, 4), mask)
    with pytest.raises(ValueError, match=re.escape("got (1, 2, 3, 4)")):
        plus(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4))


DIM, TOKENS = 5, 4


def _ibot_steps(global_batch: int, steps: int) -> list[dict]:
    """iBOT steps of a linear student/teacher on this process's share of the images.

    Every image has the same number of masked tokens, so every process averages the same
    number of teacher outputs into the center and the all-reduced center is the full one.
    """
    r, w = dist.rank(), dist.world_size()
    n = global_batch // w
    torch.manual_seed(0)
    student, teacher = nn.Linear(3, DIM), nn.Linear(3, DIM)
    loss_fn = IBOTPatchLoss(output_dim=DIM, center_momentum=0.6)
    tokens = torch.randn(steps, global_batch, TOKENS, 3)
    scores = torch.rand(steps, global_batch, TOKENS)
    mask = scores < scores.median(dim=-1, keepdim=True).values  # 2 of 4 tokens per image
    out = []
    for step in range(steps):
        m = mask[step, r * n : (r + 1) * n].reshape(n, 2, 2)
        x = tokens[step, r * n : (r + 1) * n][m.flatten(1)]
        student.zero_grad()
        teacher_out = teacher(x).detach()
        loss = loss_fn(teacher_out, student(x), m)
        loss.backward()
        out.append(
            {
                "loss": loss.detach(),
                "grads": [p.grad.clone() for p in student.parameters()],
                "center": loss_fn.center.value.clone(),
                "local_mean": teacher_out.mean(dim=0, keepdim=True),
            }
        )
    return out


@pytest.mark.dist
def test_two_processes_center_and_gradients_equal_full_batch() -> None:
    per_rank = run_distributed(_ibot_steps, 2, 6, 2)
    full = _ibot_steps(6, 2)
    for step, expected in enumerate(full):
        ranks = [r[step] for r in per_rank]
        for r in ranks:
            torch.testing.assert_close(r["center"], expected["center"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, expected["loss"])
        for g0, g1, e in zip(ranks[0]["grads"], ranks[1]["grads"], expected["grads"], strict=True):
            torch.testing.assert_close((g0 + g1) / 2, e, rtol=1e-4, atol=1e-5)
    # The center is shared: after one step from zero, a process alone would hold
    # (1 - momentum) times the mean of its own images only.
    for r in per_rank:
        assert not torch.allclose(r[0]["center"], 0.4 * r[0]["local_mean"], rtol=1e-3)
