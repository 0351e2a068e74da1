"""iBOT patch losses (iBOT, DINOv2, TIPSv2), with LightlySSL 1.6's interface.

- iBOT: Zhou et al. 2021, "iBOT: Image BERT Pre-Training with Online Tokenizer",
  https://arxiv.org/abs/2111.07832
- DINOv2: Oquab et al. 2023, "DINOv2: Learning Robust Visual Features without Supervision",
  https://arxiv.org/abs/2304.07193
- TIPSv2 (iBOT++), 2026, https://arxiv.org/abs/2604.12012

Both losses are the DINO cross-entropy applied to patch tokens: ``H(p, q) = -sum_k p_k log
q_k`` with the centered, sharpened teacher distribution ``p = softmax((t - c) / tau_t)`` and
the student distribution ``q = softmax(s / tau_s)``. The center ``c``
(:class:`fastssl.models.modules.center.Center`, shape (1, K)) is a moving average of the
teacher's patch outputs, averaged over processes, and is updated after every call.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fastssl.models.modules.center import Center


class IBOTPatchLoss(nn.Module):
    """iBOT masked-patch loss (Zhou et al. 2021), as used by DINOv2 (Oquab et al. 2023).

    The cross-entropy (module docstring) of every masked token, averaged per image over its
    masked tokens and then over the images: ``mean_b mean_{masked i of b} H(p_i, q_i)``. An
    image without masked tokens contributes 0 to the mean over images.

    Shapes: ``teacher_out`` and ``student_out`` (M, K), the outputs of the M masked tokens
    of all images in the row-major order of ``mask`` (B, H, W), which has exactly M True
    entries (``x[mask]`` for patch tokens ``x`` of shape (B, H, W, K) gives this order).
    Returns a scalar.

    Like LightlySSL 1.6 the teacher output is not detached: detach it (or compute it under
    ``torch.no_grad()``) when the teacher shares parameters with the student.

    Attributes:
        teacher_temp: Default teacher temperature.
        student_temp: Student temperature.
        center: :class:`fastssl.models.modules.center.Center` of size (1, output_dim).

    Example:
        >>> import torch
        >>> loss_fn = IBOTPatchLoss(output_dim=32)
        >>> mask = torch.rand(2, 4, 4) < 0.5  # (B, H, W), True = masked
        >>> num_masked = int(mask.sum())
        >>> teacher_out = torch.randn(num_masked, 32)
        >>> student_out = torch.randn(num_masked, 32)
        >>> loss = loss_fn(teacher_out, student_out, mask)
    """

    def __init__(
        self,
        output_dim: int = 65536,
        teacher_temp: float = 0.04,
        student_temp: float = 0.1,
        center_mode: str = "mean",
        center_momentum: float = 0.9,
    ) -> None:
        """Builds the loss and its center.

        Args:
            output_dim: Dimension K of the outputs.
            teacher_temp: Default teacher temperature, > 0.
            student_temp: Student temperature, > 0.
            center_mode: How a batch center is computed. Only ``"mean"`` is supported.
            center_momentum: Weight of the old center in the moving average.

        Raises:
            ValueError: On a non-positive ``output_dim`` or temperature, or an unknown
                ``center_mode``.
        """
        super().__init__()
        name = type(self).__name__
        if output_dim < 1:
            raise ValueError(f"{name} 'output_dim' must be >= 1, got output_dim={output_dim}.")
        for arg, value in (("teacher_temp", teacher_temp), ("student_temp", student_temp)):
            if not value > 0:
                raise ValueError(f"{name} '{arg}' must be > 0, got {arg}={value}.")
        self.teacher_temp = teacher_temp
        self.student_temp = student_temp
        self.center = Center(size=(1, output_dim), mode=center_mode, momentum=center_momentum)

    def _cross_entropy(
        self, teacher_out: Tensor, student_out: Tensor, teacher_temp: float | Tensor | None
    ) -> Tensor:
        """Per-token cross-entropy ``H(p, q)`` of (M, K) outputs, shape (M,)."""
        temperature = self.teacher_temp if teacher_temp is None else teacher_temp
        teacher_probs = F.softmax((teacher_out - self.center.value) / temperature, dim=-1)
        student_log_probs = F.log_softmax(student_out / self.student_temp, dim=-1)
        return -(teacher_probs * student_log_probs).sum(dim=-1)

    def forward(
        self,
        teacher_out: Tensor,
        student_out: Tensor,
        mask: Tensor,
        teacher_temp: float | Tensor | None = None,
    ) -> Tensor:
        """Computes the loss and updates the center.

        Args:
            teacher_out: Teacher outputs of the masked tokens, shape (M, K).
            student_out: Student outputs of the masked tokens, shape (M, K).
            mask: Boolean token mask (B, H, W) with M True entries.
            teacher_temp: Teacher temperature for this call; defaults to ``teacher_temp``.

        Returns:
            Scalar loss.

        Raises:
            ValueError: If the outputs differ in shape or are not 2-D, ``mask`` is not 3-D,
                or the number of masked tokens is not M.
        """
        if teacher_out.shape != student_out.shape or teacher_out.dim() != 2:
            raise ValueError(
                "teacher_out and student_out must have the same shape (M, K), got "
                f"{tuple(teacher_out.shape)} and {tuple(student_out.shape)}."
            )
        if mask.dim() != 3:
            raise ValueError(f"mask must have shape (B, H, W), got {tuple(mask.shape)}.")
        num_tokens = teacher_out.shape[0]
        masked_per_image = mask.flatten(1).sum(dim=1)  # (B,)
        # One host sync (LightlySSL's boolean indexing syncs too): a wrong count would
        # otherwise silently give tokens the weights of other images.
        num_masked = int(masked_per_image.sum())
        if num_masked != num_tokens:
            raise ValueError(
                f"mask must have one True entry per row of teacher_out: {num_masked} masked "
                f"tokens for {num_tokens} rows."
            )
        cross_entropy = self._cross_entropy(teacher_out, student_out, teacher_temp)
        # Tokens come image by image, so each token's weight 1 / (masked tokens of its
        # image) is its image's weight repeated once per masked token: no boolean
        # indexing, and images without masked tokens simply repeat zero times.
        weights = torch.repeat_interleave(
            1.0 / masked_per_image.clamp(min=1).to(cross_entropy.dtype),
            masked_per_image,
            output_size=num_tokens,
        )
        loss = (cross_entropy * weights).sum() / mask.shape[0]
        self.center.update(teacher_out)
        return loss


class IBOTPlusPlusPatchLoss(IBOTPatchLoss):
    """iBOT++ patch loss (TIPSv2, 2026, https://arxiv.org/abs/2604.12012).

    iBOT++ distils *all* patch tokens, visible ones included, which anchors every patch
    feature to the teacher and helps dense downstream tasks. With a mask (True = masked) the
    per-image means over masked and over visible tokens are kept apart, so the visible
    tokens do not dilute the masked-token signal::

        loss = mean_b (masked_b + visible_loss_weight * visible_b)

    (``visible_loss_weight=0`` is iBOT on full outputs). Without a mask the loss is the mean
    over all tokens. An image with no masked (or no visible) tokens contributes 0 to that
    term.

    Shapes: ``teacher_out`` and ``student_out`` (B, N, K), or (B * N, K) together with a
    mask that gives B; ``mask`` (B, H, W) with H * W = N, or (B, N). Returns a scalar.

    Example:
        >>> import torch
        >>> loss_fn = IBOTPlusPlusPatchLoss(output_dim=32)
        >>> teacher_out = torch.randn(2, 16, 32)  # (B, N, K)
        >>> student_out = torch.randn(2, 16, 32)
        >>> mask = torch.rand(2, 4, 4) < 0.5
        >>> loss = loss_fn(teacher_out, student_out, mask=mask, visible_loss_weight=0.5)
    """

    def forward(
        self,
        teacher_out: Tensor,
        student_out: Tensor,
        mask: Tensor | None = None,
        teacher_temp: float | Tensor | None = None,
        visible_loss_weight: float = 1.0,
    ) -> Tensor:
        """Computes the loss and updates the center.

        Args:
            teacher_out: Teacher patch outputs, (B, N, K) or (B * N, K).
            student_out: Student patch outputs, same shape as ``teacher_out``.
            mask: Optional boolean mask (B, H, W) or (B, N), True = masked. Required for
                (B * N, K) outputs.
            teacher_temp: Teacher temperature for this call; defaults to ``teacher_temp``.
            visible_loss_weight: Weight of the visible-token term (used with a mask).

        Returns:
            Scalar loss.

        Raises:
            ValueError: If the outputs differ in shape or are not 2-D/3-D, 2-D outputs come
                without a mask or do not split into the mask's batch size, or the mask does
                not have B * N entries.
        """
        if teacher_out.shape != student_out.shape:
            raise ValueError(
                "teacher_out and student_out must have the same shape, got "
                f"{tuple(teacher_out.shape)} and {tuple(student_out.shape)}."
            )
        if teacher_out.dim() == 3:
            batch_size = teacher_out.shape[0]
        elif teacher_out.dim() == 2:
            if mask is None:
                raise ValueError(
                    "mask is required when teacher_out has shape (B * N, K): it gives the "
                    "batch size B."
                )
            batch_size = mask.shape[0]
            if teacher_out.shape[0] % batch_size != 0:
                raise ValueError(
                    f"teacher_out has {teacher_out.shape[0]} rows, which do not split into "
                    f"the batch size {batch_size} of mask."
                )
        else:
            raise ValueError(
                f"teacher_out must have shape (B, N, K) or (B * N, K), got "
                f"{tuple(teacher_out.shape)}."
            )
        teacher_flat = teacher_out.flatten(0, -2)
        student_flat = student_out.flatten(0, -2)
        num_tokens = teacher_flat.shape[0] // batch_size
        cross_entropy = self._cross_entropy(teacher_flat, student_flat, teacher_temp)
        cross_entropy = cross_entropy.view(batch_size, num_tokens)
        if mask is None:
            loss = cross_entropy.mean()
        else:
            if mask.numel() != batch_size * num_tokens or mask.shape[0] != batch_size:
                raise ValueError(
                    f"mask must have shape (B, H, W) or (B, N) with B={batch_size} and "
                    f"N={num_tokens} tokens, got {tuple(mask.shape)}."
                )
            masked = mask.reshape(batch_size, num_tokens).to(cross_entropy.dtype)
            visible = 1.0 - masked
            masked_mean = (cross_entropy * masked).sum(1) / masked.sum(1).clamp(min=1.0)
            visible_mean = (cross_entropy * visible).sum(1) / visible.sum(1).clamp(min=1.0)
            loss = (masked_mean + visible_loss_weight * visible_mean).mean()
        self.center.update(teacher_flat)
        return loss
