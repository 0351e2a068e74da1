"""DINO self-distillation loss (Caron et al. 2021), with LightlySSL 1.6's interface.

- DINO: Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers",
  https://arxiv.org/abs/2104.14294

The loss is the cross-entropy between the centered, sharpened teacher distribution of one
view and the student distribution of every *other* view. Instead of building the full
(teacher views x student views) table of cross-entropies, it uses
``sum_{t != s} <p_t, log q_s> = <sum_t p_t, sum_s log q_s> - sum_i <p_i, log q_i>``, which
reads each distribution once: O((T + S) * B * D) work instead of O(T * S * B * D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastssl.models.modules.center import center_momentum, get_center_function


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"DINOLoss '{name}' must be > 0, got {name}={value!r}.")


class DINOLoss(nn.Module):
    """Cross-entropy between teacher and student views, with centering (DINO).

    For teacher views ``t`` and student views ``s`` (pairs with the same index are the same
    crop and are skipped), the loss is ``mean_{t != s} mean_b H(p_t[b], q_s[b])`` with
    ``p_t = softmax((g_t - c) / tau_t)``, ``q_s = softmax(f_s / tau_s)`` and the
    cross-entropy ``H(p, q) = -sum_d p_d log q_d``,
    where ``c`` is a moving average of the teacher outputs, updated after each call. The
    teacher temperature rises linearly from ``warmup_teacher_temp`` to ``teacher_temp`` over
    the first ``warmup_teacher_temp_epochs`` epochs when ``forward`` gets ``epoch``.

    Like LightlySSL 1.6 (and unlike the DINO reference code) the teacher outputs are not
    detached: a teacher that shares parameters with the student must detach them itself.

    In distributed training the center update averages the batch centers of all processes
    (:func:`fastssl.utils.dist.all_reduce_mean`), so it equals the full-batch center.

    Attributes:
        output_dim: Dimension D of the model outputs.
        teacher_temp: Final (and default) teacher temperature.
        student_temp: Student temperature.
        center_momentum: Weight of the old center in the moving average.
        warmup_teacher_temp_epochs: Length of the teacher temperature warm-up, in epochs.
        teacher_temp_schedule: The warm-up temperatures, one per warm-up epoch.
        center: Buffer of shape (1, 1, D).

    Example:
        >>> loss_fn = DINOLoss(output_dim=8)
        >>> teacher_out = [torch.randn(4, 8) for _ in range(2)]  # 2 global views
        >>> student_out = [torch.randn(4, 8) for _ in range(4)]  # 2 global + 2 local views
        >>> loss = loss_fn(teacher_out, student_out, epoch=0)
        >>> loss.shape
        torch.Size([])
    """

    _temperatures: Tensor  # teacher temperature per epoch, then the final one

    center: Tensor

    def __init__(
        self,
        output_dim: int = 65536,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 30,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        center_mode: str = "mean",
    ) -> None:
        """Creates the loss and its center buffer.

        Args:
            output_dim: Dimension D of the model outputs.
            warmup_teacher_temp: Teacher temperature at epoch 0.
            teacher_temp: Teacher temperature after the warm-up.
            warmup_teacher_temp_epochs: Number of warm-up epochs (0 disables the warm-up).
            student_temp: Student temperature.
            center_momentum: Weight of the old center in the moving average.
            center_mode: How the batch center is computed. Only ``"mean"`` is supported.

        Raises:
            ValueError: On an unknown ``center_mode``, a non-positive temperature or
                ``output_dim``, or a negative ``warmup_teacher_temp_epochs``.
        """
        super().__init__()
        self._center_fn = get_center_function(center_mode, argument="center_mode")
        if output_dim < 1:
            raise ValueError(f"DINOLoss 'output_dim' must be >= 1, got output_dim={output_dim}.")
        for name, value in [
            ("warmup_teacher_temp", warmup_teacher_temp),
            ("teacher_temp", teacher_temp),
            ("student_temp", student_temp),
        ]:
            _check_positive(name, value)
        if warmup_teacher_temp_epochs < 0:
            raise ValueError(
                "DINOLoss 'warmup_teacher_temp_epochs' must be >= 0, got "
                f"warmup_teacher_temp_epochs={warmup_teacher_temp_epochs}."
            )
        self.output_dim = output_dim
        self.teacher_temp = teacher_temp
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.teacher_temp_schedule = torch.linspace(
            warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs
        )
        # The schedule then teacher_temp, looked up as a tensor: a compiled training step
        # sees the epoch as a symbolic integer and does not recompile when it changes (a
        # Python float per epoch would recompile every epoch, up to torch's limit).
        temperatures = torch.cat([self.teacher_temp_schedule, torch.tensor([teacher_temp])])
        self.register_buffer("_temperatures", temperatures, persistent=False)
        self.register_buffer("center", torch.zeros(1, 1, output_dim))

    def _teacher_temperature(
        self, teacher_temp: float | Tensor | None, epoch: int | None
    ) -> float | Tensor:
        if isinstance(teacher_temp, Tensor):  # a schedule's value (see DINOv2)
            return teacher_temp
        if teacher_temp is not None:
            return float(teacher_temp)
        if epoch is None:
            return self.teacher_temp
        return self._temperatures[min(max(epoch, 0), self.warmup_teacher_temp_epochs)]

    def forward(
        self,
        teacher_out: list[Tensor],
        student_out: list[Tensor],
        teacher_temp: float | Tensor | None = None,
        epoch: int | None = None,
    ) -> Tensor:
        """Computes the loss and updates the center.

        Args:
            teacher_out: T tensors of shape (B, D), one per teacher view.
            student_out: S tensors of shape (B, D), one per student view; student view ``i``
                and teacher view ``i`` must be the same crop (their pair is skipped).
            teacher_temp: Teacher temperature for this call; overrides the schedule.
            epoch: Current epoch, selecting the warm-up temperature.

        Returns:
            Scalar: the mean cross-entropy over the ``T * S - min(T, S)`` cross-view pairs
            and the batch.

        Raises:
            ValueError: If there is no cross-view pair (e.g. one teacher and one student
                view).
        """
        num_teacher, num_student = len(teacher_out), len(student_out)
        num_pairs = num_teacher * num_student - min(num_teacher, num_student)
        if num_pairs == 0:
            raise ValueError(
                "DINOLoss needs at least one pair of different views (a teacher view is "
                f"never compared with the student view of the same index), got "
                f"{num_teacher} teacher view(s) and {num_student} student view(s); pass at "
                "least two views on one side."
            )
        temperature = self._teacher_temperature(teacher_temp, epoch)

        teacher = torch.stack(teacher_out)  # (T, B, D)
        teacher_probs = F.softmax((teacher - self.center) / temperature, dim=-1)
        student_log_probs = F.log_softmax(torch.stack(student_out) / self.student_temp, dim=-1)

        # sum over all (t, s) pairs minus the same-index pairs, see the module docstring.
        all_pairs = torch.sum(teacher_probs.sum(0) * student_log_probs.sum(0))
        num_same = min(num_teacher, num_student)
        same_pairs = torch.sum(teacher_probs[:num_same] * student_log_probs[:num_same])
        loss = (same_pairs - all_pairs) / (num_pairs * teacher.shape[1])

        self.update_center(teacher)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out: Tensor) -> None:
        """Moves the center towards the mean teacher output (over views, batch, processes).

        Args:
            teacher_out: Tensor of shape (T, B, D).
        """
        batch_center = self._center_fn(x=teacher_out, dim=(0, 1))
        self.center.copy_(center_momentum(self.center, batch_center, self.center_momentum))
