"""Helpers of :class:`fastssl.loss.patch_kernel_alignment_loss.PatchKernelAlignmentLoss`,
with LightlySSL 1.6's public name (:func:`roi_resample_to_grid`).

The loss compares, image by image, how the dense (patch) features of a student and a
teacher relate to each other. Everything here is local to each image, so no process ever
needs another's data (no collectives, DDP-safe as is).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align


def _validate_dense_inputs(
    student_features: Tensor, teacher_features: Tensor, mask: Tensor | None
) -> None:
    """Checks that the features are (B, N, D) of equal shape and ``mask`` is bool (B, N).

    Raises:
        ValueError: Naming the argument with the wrong shape or dtype.
    """
    for name, features in (
        ("student_features", student_features),
        ("teacher_features", teacher_features),
    ):
        if features.dim() != 3:
            raise ValueError(f"{name} must have shape (B, N, D), got {tuple(features.shape)}.")
    if student_features.shape != teacher_features.shape:
        raise ValueError(
            "student_features and teacher_features must have the same shape, got "
            f"{tuple(student_features.shape)} and {tuple(teacher_features.shape)}."
        )
    if mask is not None:
        expected = tuple(student_features.shape[:2])
        if tuple(mask.shape) != expected:
            raise ValueError(f"mask must have shape {expected}, got {tuple(mask.shape)}.")
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must have dtype torch.bool, got {mask.dtype}.")


def _subsample_tokens(
    student: Tensor, teacher: Tensor, valid: Tensor, max_tokens: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Keeps ``max_tokens`` random tokens per image, valid tokens first.

    Every token gets a uniform random score (``torch.rand(B, N)`` from the global
    generator, the numbers LightlySSL 1.6 draws); ignored tokens score +inf, and the
    ``max_tokens`` lowest scores are kept. This bounds the O(N^2) kernel cost.

    Args:
        student: Shape (B, N, D).
        teacher: Shape (B, N, D).
        valid: Float (B, N), 1 for valid tokens and 0 for ignored ones.
        max_tokens: Tokens to keep, < N.

    Returns:
        ``(student, teacher, valid)`` restricted to the kept tokens: (B, M, D), (B, M, D),
        (B, M) with M = max_tokens.
    """
    scores = torch.rand(valid.shape, device=student.device)
    scores = scores.masked_fill(valid == 0, torch.inf)
    keep = scores.topk(max_tokens, dim=1, largest=False).indices  # (B, M)
    index = keep.unsqueeze(-1)
    return (
        student.gather(1, index.expand(-1, -1, student.shape[-1])),
        teacher.gather(1, index.expand(-1, -1, teacher.shape[-1])),
        valid.gather(1, keep),
    )


def roi_resample_to_grid(feature_map: Tensor, boxes: Tensor, out_h: int, out_w: int) -> Tensor:
    """Resamples one box of every feature map onto an ``out_h x out_w`` grid of tokens.

    Needed for the cross-view use of
    :class:`~fastssl.loss.patch_kernel_alignment_loss.PatchKernelAlignmentLoss`: when
    student and teacher see different, overlapping crops, token i of one view is not at the
    place of token i of the other. Resampling the shared region of each view onto the same
    grid restores the correspondence. Bilinear ROI Align
    (:func:`torchvision.ops.roi_align` with ``aligned=True``, i.e. pixel centers at
    half-integer coordinates, so a box maps continuously onto the grid); differentiable
    with respect to ``feature_map``.

    Args:
        feature_map: Dense features (B, C, H, W), e.g. ViT patch tokens reshaped to the
            patch grid.
        boxes: (B, 4) boxes ``(x0, y0, x1, y1)`` in feature-grid coordinates (x in [0, W],
            y in [0, H]), one per sample, with x0 <= x1 and y0 <= y1.
        out_h: Height of the output grid.
        out_w: Width of the output grid.

    Returns:
        Tokens (B, out_h * out_w, C) in row-major order.

    Raises:
        ValueError: If a shape is invalid or the batch sizes differ.

    Example:
        >>> import torch
        >>> feature_map = torch.randn(2, 8, 14, 14)  # (B, C, H, W)
        >>> boxes = torch.tensor([[0.0, 0.0, 7.0, 7.0], [3.5, 2.0, 14.0, 9.0]])
        >>> roi_resample_to_grid(feature_map, boxes, 7, 7).shape
        torch.Size([2, 49, 8])
    """
    if feature_map.dim() != 4:
        raise ValueError(
            f"feature_map must have shape (B, C, H, W), got {tuple(feature_map.shape)}."
        )
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (B, 4), got {tuple(boxes.shape)}.")
    if boxes.shape[0] != feature_map.shape[0]:
        raise ValueError(
            f"boxes has batch size {boxes.shape[0]} but feature_map has {feature_map.shape[0]}."
        )
    # roi_align takes (K, 5) rois: the sample index, then the box.
    sample = torch.arange(boxes.shape[0], device=feature_map.device, dtype=feature_map.dtype)
    rois = torch.cat([sample.unsqueeze(1), boxes.to(feature_map)], dim=1)
    pooled: Tensor = roi_align(
        feature_map, rois, output_size=(out_h, out_w), spatial_scale=1.0, aligned=True
    )  # (B, C, out_h, out_w)
    return pooled.flatten(2).transpose(1, 2).contiguous()
