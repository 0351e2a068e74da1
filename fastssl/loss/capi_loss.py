"""CAPI loss: predict the online clusters of masked patches, with LightlySSL 1.6's
interface.

- CAPI: Darcet et al. 2025, "Cluster and Predict Latent Patches for Improved Masked Image
  Modeling", https://arxiv.org/abs/2502.08769 (code: https://github.com/facebookresearch/capi)

The teacher's patch-to-cluster logits become soft targets through a Sinkhorn-Knopp
normalisation run separately for every token position ("positionwise"): at each position the
cluster mass is spread uniformly over the batch, while each token keeps a distribution over
clusters. Balancing per position, not over all tokens at once, avoids the positional
collapse the paper describes (clusters that only encode where a patch is).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fastssl.utils import dist


@torch.no_grad()
def sinkhorn_knopp(
    logits: Tensor,
    iterations: int = 3,
    gather_distributed: bool = False,
    epsilon: float = 1e-8,
) -> Tensor:
    """Positionwise Sinkhorn-Knopp normalisation of cluster logits (CAPI).

    Starting from ``exp(logits)``, every iteration divides by the sum over the batch (per
    position and cluster), then by the sum over clusters (per token), so the result is a
    distribution over clusters for every token whose cluster marginals over the batch are
    balanced. Before ``exp`` each (position, cluster) column is shifted by its maximum over
    the batch, which the first normalisation cancels, so large logits cannot overflow.

    Args:
        logits: Cluster logits of shape (batch_size, sequence_length, num_clusters).
        iterations: Number of Sinkhorn-Knopp iterations.
        gather_distributed: Sum (and take the maximum) over the batches of all processes.
        epsilon: Added to every denominator.

    Returns:
        Assignments with the shape of ``logits``; each token's sums to one over clusters.

    Example:
        >>> import torch
        >>> q = sinkhorn_knopp(torch.randn(4, 2, 3))
        >>> torch.allclose(q.sum(dim=-1), torch.ones(4, 2))
        True
    """
    distributed = gather_distributed and dist.is_distributed()
    shift = logits.amax(dim=0, keepdim=True)  # (1, S, K)
    if distributed:
        shift = dist.gather_cat(shift).amax(dim=0, keepdim=True)
    q = torch.exp(logits - shift)
    for _ in range(iterations):
        batch_sum = q.sum(dim=0, keepdim=True)
        if distributed:
            batch_sum = dist.all_reduce_sum(batch_sum)
        q = q / (batch_sum + epsilon)
        q = q / (q.sum(dim=-1, keepdim=True) + epsilon)
    return q


class CAPILoss(nn.Module):
    """CAPI loss (Darcet et al. 2025, https://arxiv.org/abs/2502.08769).

    ``mean_tokens H(sinkhorn_knopp(teacher / tau_t), softmax(student / tau_s))``: the
    cross-entropy between the teacher's positionwise Sinkhorn-Knopp assignments (see
    :func:`sinkhorn_knopp`; computed without gradient) and the student's predicted cluster
    distribution. Passing the teacher logits as ``student_logits`` too gives the loss that
    trains the online clustering prototypes, as in the reference code.

    Shapes: ``teacher_logits`` (B, N_teacher, K); ``student_logits`` (B, N_pred, K);
    optional ``teacher_index`` (B, N_pred) selecting, after the normalisation over all
    teacher tokens, the targets of the predicted tokens. Returns a scalar.

    Attributes:
        teacher_temperature: Temperature of the teacher logits.
        student_temperature: Temperature of the student logits.
        sinkhorn_iterations: Sinkhorn-Knopp iterations.
        gather_distributed: Balance the assignments over the batches of all processes.

    Example:
        >>> import torch
        >>> loss_fn = CAPILoss()
        >>> teacher = torch.randn(4, 16, 32)  # (B, tokens, clusters)
        >>> student = torch.randn(4, 6, 32)  # predictions for 6 masked tokens
        >>> index = torch.randint(0, 16, (4, 6))
        >>> loss = loss_fn(teacher, student, teacher_index=index)
    """

    def __init__(
        self,
        teacher_temperature: float = 0.06,
        student_temperature: float = 0.12,
        sinkhorn_iterations: int = 3,
        gather_distributed: bool = False,
    ) -> None:
        """Builds the loss.

        Args:
            teacher_temperature: Temperature of the teacher logits, > 0.
            student_temperature: Temperature of the student logits, > 0.
            sinkhorn_iterations: Sinkhorn-Knopp iterations, >= 0.
            gather_distributed: Balance the assignments over the batches of all processes.

        Raises:
            ValueError: If a temperature is not positive or ``sinkhorn_iterations < 0``.
        """
        super().__init__()
        for name, value in (
            ("teacher_temperature", teacher_temperature),
            ("student_temperature", student_temperature),
        ):
            if not value > 0:
                raise ValueError(f"CAPILoss '{name}' must be > 0, got {name}={value}.")
        if sinkhorn_iterations < 0:
            raise ValueError(
                "CAPILoss 'sinkhorn_iterations' must be >= 0, got "
                f"sinkhorn_iterations={sinkhorn_iterations}."
            )
        self.teacher_temperature = teacher_temperature
        self.student_temperature = student_temperature
        self.sinkhorn_iterations = sinkhorn_iterations
        self.gather_distributed = gather_distributed

    def forward(
        self,
        teacher_logits: Tensor,
        student_logits: Tensor,
        teacher_index: Tensor | None = None,
    ) -> Tensor:
        """Computes the mean cross-entropy over the predicted tokens.

        Args:
            teacher_logits: Shape (B, N_teacher, K); detached.
            student_logits: Shape (B, N_pred, K).
            teacher_index: Optional long tensor (B, N_pred): row-major indices of the
                predicted tokens among the teacher tokens. Without it the teacher and
                student tokens must already be aligned (N_pred == N_teacher).

        Returns:
            Scalar loss.

        Raises:
            ValueError: If the shapes do not fit together.
        """
        if teacher_logits.dim() != 3 or student_logits.dim() != 3:
            raise ValueError(
                "teacher_logits and student_logits must have shape (B, N, K), got "
                f"{tuple(teacher_logits.shape)} and {tuple(student_logits.shape)}."
            )
        expected = (
            teacher_logits.shape
            if teacher_index is None
            else (*teacher_index.shape, teacher_logits.shape[-1])
        )
        if student_logits.shape != expected:
            what = "teacher_logits" if teacher_index is None else "teacher_index (and K)"
            raise ValueError(
                f"student_logits must have shape {tuple(expected)} to match {what}, got "
                f"{tuple(student_logits.shape)}."
            )
        targets = sinkhorn_knopp(
            teacher_logits.detach() / self.teacher_temperature,
            iterations=self.sinkhorn_iterations,
            gather_distributed=self.gather_distributed,
        )
        if teacher_index is not None:
            targets = targets.gather(
                1, teacher_index.unsqueeze(-1).expand(-1, -1, targets.shape[-1])
            )
        log_probs = F.log_softmax(student_logits / self.student_temperature, dim=-1)
        return -(targets * log_probs).sum(dim=-1).mean()
