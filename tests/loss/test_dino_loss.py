from __future__ import annotations

import re

import pytest
import torch
from lightly.loss.dino_loss import DINOLoss as LightlyDINOLoss
from torch import Tensor, nn

from fastssl.loss.dino_loss import DINOLoss
from fastssl.models.modules.center import Center
from fastssl.utils import dist
from tests._distributed import run_distributed

DIM = 7


def _views(n: int, batch: int, seed: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, DIM, generator=g).requires_grad_() for _ in range(n)]


def _naive_dino(
    teacher: list[Tensor], student: list[Tensor], center: Tensor, t_temp: float, s_temp: float
) -> Tensor:
    """The DINO paper's loss written as a loop over pairs of different views and samples."""
    terms = []
    for t, g in enumerate(teacher):
        for s, f in enumerate(student):
            if t == s:
                continue
            for b in range(g.shape[0]):
                p_teacher = torch.softmax((g[b] - center.reshape(-1)) / t_temp, dim=0)
                log_p_student = torch.log_softmax(f[b] / s_temp, dim=0)
                terms.append(-(p_teacher * log_p_student).sum())
    return torch.stack(terms).mean()


CASES = [
    # (teacher views, student views, forward kwargs, init kwargs)
    (2, 2, {}, {}),
    (2, 6, {"epoch": 0}, {"warmup_teacher_temp": 0.02, "warmup_teacher_temp_epochs": 4}),
    (2, 5, {"epoch": 3}, {"warmup_teacher_temp": 0.02, "warmup_teacher_temp_epochs": 4}),
    (2, 5, {"epoch": 9}, {"warmup_teacher_temp": 0.02, "warmup_teacher_temp_epochs": 4}),
    (3, 2, {"teacher_temp": 0.07}, {"student_temp": 0.2, "center_momentum": 0.5}),
    (1, 3, {"teacher_temp": 0.07, "epoch": 1}, {"teacher_temp": 0.05}),
]


@pytest.mark.parametrize(("n_teacher", "n_student", "fwd", "init"), CASES)
def test_matches_lightly_values_gradients_and_center(
    n_teacher: int, n_student: int, fwd: dict, init: dict
) -> None:
    ours, theirs = DINOLoss(DIM, **init), LightlyDINOLoss(DIM, **init)
    for step in range(3):  # later steps use the updated center
        teacher = _views(n_teacher, 5, seed=step)
        student = _views(n_student, 5, seed=100 + step)
        inputs = teacher + student
        loss = ours(teacher, student, **fwd)
        grads = torch.autograd.grad(loss, inputs)
        expected = theirs(teacher, student, **fwd)
        expected_grads = torch.autograd.grad(expected, inputs)
        assert loss.shape == expected.shape == torch.Size([])
        torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)
        for g, e in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ours.center, theirs.center, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("n_teacher", "n_student"), [(2, 2), (2, 4), (3, 1)])
def test_matches_paper_formula(n_teacher: int, n_student: int) -> None:
    loss_fn = DINOLoss(DIM, teacher_temp=0.06, student_temp=0.15, center_momentum=0.8)
    loss_fn.center.copy_(torch.randn(1, 1, DIM))
    center_before = loss_fn.center.clone()
    teacher, student = _views(n_teacher, 3, seed=1), _views(n_student, 3, seed=2)
    loss = loss_fn(teacher, student)
    expected = _naive_dino(teacher, student, center_before, 0.06, 0.15)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    # Center: momentum average with the mean over all teacher views and samples.
    batch_mean = torch.cat([t.detach() for t in teacher]).mean(dim=0)
    torch.testing.assert_close(
        loss_fn.center.reshape(-1), 0.8 * center_before.reshape(-1) + 0.2 * batch_mean
    )


def test_teacher_temperature_warmup_is_linear() -> None:
    loss_fn = DINOLoss(
        DIM, warmup_teacher_temp=0.02, teacher_temp=0.08, warmup_teacher_temp_epochs=4
    )
    teacher, student = _views(2, 4, seed=0), _views(2, 4, seed=1)
    # A frozen center makes calls comparable: momentum 1 keeps it at zero.
    loss_fn.center_momentum = 1.0
    for epoch, temp in [(0, 0.02), (1, 0.04), (2, 0.06), (3, 0.08), (4, 0.08), (50, 0.08)]:
        by_epoch = loss_fn(teacher, student, epoch=epoch)
        by_temp = loss_fn(teacher, student, teacher_temp=temp)
        torch.testing.assert_close(by_epoch, by_temp)
    assert loss_fn.teacher_temp_schedule.tolist() == pytest.approx([0.02, 0.04, 0.06, 0.08])
    # The explicit temperature wins over the epoch.
    torch.testing.assert_close(
        loss_fn(teacher, student, teacher_temp=0.5, epoch=0),
        loss_fn(teacher, student, teacher_temp=0.5),
    )


def test_deterministic_and_center_state_dict() -> None:
    teacher, student = _views(2, 4, seed=0), _views(3, 4, seed=1)
    a, b = DINOLoss(DIM), DINOLoss(DIM)
    assert torch.equal(a(teacher, student), b(teacher, student))
    assert torch.equal(a.center, b.center)
    assert a.center.shape == (1, 1, DIM)
    assert "center" in a.state_dict()
    assert not torch.equal(a.center, torch.zeros(1, 1, DIM))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"center_mode": "median"}, "Unknown center_mode 'median'. Valid modes are ['mean']"),
        ({"teacher_temp": 0.0}, "'teacher_temp' must be > 0, got teacher_temp=0.0"),
        ({"student_temp": -1.0}, "'student_temp' must be > 0, got student_temp=-1.0"),
        ({"warmup_teacher_temp": 0.0}, "'warmup_teacher_temp' must be > 0"),
        ({"warmup_teacher_temp_epochs": -1}, "warmup_teacher_temp_epochs=-1"),
        ({"output_dim": 0}, "'output_dim' must be >= 1, got output_dim=0"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        DINOLoss(**{"output_dim": DIM, **kwargs})


def test_single_view_pair_raises_and_keeps_center() -> None:
    loss_fn = DINOLoss(DIM)
    with pytest.raises(ValueError, match="1 teacher view\\(s\\) and 1 student view\\(s\\)"):
        loss_fn(_views(1, 3, 0), _views(1, 3, 1))
    assert torch.equal(loss_fn.center, torch.zeros(1, 1, DIM))


@pytest.mark.compile
def test_compile_fullgraph_matches_eager() -> None:
    torch._dynamo.reset()
    eager, compiled_module = (
        DINOLoss(DIM, warmup_teacher_temp_epochs=3),
        DINOLoss(DIM, warmup_teacher_temp_epochs=3),
    )
    compiled = torch.compile(compiled_module, backend="aot_eager", fullgraph=True)
    for epoch in range(2):
        teacher, student = _views(2, 4, seed=epoch), _views(4, 4, seed=10 + epoch)
        loss = compiled(teacher, student, epoch=epoch)
        (grad,) = torch.autograd.grad(loss, student[1])
        expected = eager(teacher, student, epoch=epoch)
        (expected_grad,) = torch.autograd.grad(expected, student[1])
        torch.testing.assert_close(loss, expected)
        torch.testing.assert_close(grad, expected_grad)
        torch.testing.assert_close(compiled_module.center, eager.center)


def _train_steps(global_batch: int, steps: int) -> list[dict]:
    """Two DINO steps of a small student/teacher on this process's share of the batch."""
    r, w = dist.rank(), dist.world_size()
    n = global_batch // w
    torch.manual_seed(0)
    student, teacher = nn.Linear(4, DIM), nn.Linear(4, DIM)
    data = torch.randn(steps, 3, global_batch, 4)[:, :, r * n : (r + 1) * n]
    loss_fn = DINOLoss(DIM, warmup_teacher_temp_epochs=2, center_momentum=0.7)
    center = Center(size=(1, 1, DIM), momentum=0.7)
    out = []
    for step in range(steps):
        student.zero_grad()
        teacher.zero_grad()
        teacher_out = [teacher(v) for v in data[step, :2]]
        loss = loss_fn(teacher_out, [student(v) for v in data[step]], epoch=step)
        loss.backward()
        center.update(torch.stack(teacher_out).detach())
        grads = [p.grad.clone() for p in (*student.parameters(), *teacher.parameters())]
        out.append(
            {
                "loss": loss.detach(),
                "grads": grads,
                "center": loss_fn.center.clone(),
                "module_center": center.value.clone(),
                "local_mean": torch.stack(teacher_out).detach().mean(dim=(0, 1)),
            }
        )
    return out


@pytest.mark.dist
def test_two_processes_center_and_gradients_equal_full_batch() -> None:
    per_rank = run_distributed(_train_steps, 2, 6, 2)
    full = _train_steps(6, 2)
    for step, expected in enumerate(full):
        ranks = [r[step] for r in per_rank]
        for r in ranks:
            torch.testing.assert_close(r["center"], expected["center"], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(
                r["module_center"], expected["module_center"], atol=1e-6, rtol=1e-5
            )
        torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, expected["loss"])
        for g0, g1, e in zip(ranks[0]["grads"], ranks[1]["grads"], expected["grads"], strict=True):
            torch.testing.assert_close((g0 + g1) / 2, e, atol=1e-5, rtol=1e-4)
    # The all-reduce mattered: a center from the local mean alone would differ.
    local_center = 0.3 * per_rank[0][0]["local_mean"]
    assert not torch.allclose(per_rank[0][0]["center"].reshape(-1), local_center, atol=1e-3)
