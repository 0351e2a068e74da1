"""MSN loss: masked anchors predict the prototype assignment of the target view.

- MSN: Assran et al. 2022, "Masked Siamese Networks for Label-Efficient Learning",
  https://arxiv.org/abs/2204.07141

Same interface as LightlySSL 1.6's ``lightly.loss.msn_loss``. Differences:

- The cross-entropy uses ``log_softmax`` instead of ``log(softmax ** -target)``, so an
  anchor probability that underflows to 0 gives a finite loss instead of ``inf``.
- With ``gather_distributed=True`` the mean anchor probabilities of the regularizer are
  averaged over all processes (with gradient), as in the MSN reference code; LightlySSL uses
  the per-process mean, whose DDP gradients differ from full-batch ones. In one process
  nothing changes.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import Tensor, nn

from fastssl.utils import dist


def prototype_probabilities(queries: Tensor, prototypes: Tensor, temperature: float) -> Tensor:
    """Returns the softmax over prototypes of the scaled query-prototype similarities.

    Args:
        queries: Tensor of shape (B, D).
        prototypes: Tensor of shape (K, D).
        temperature: The similarities are divided by it.

    Returns:
        Tensor of shape (B, K); each row sums to 1.

    Example:
        >>> probs = prototype_probabilities(torch.randn(4, 8), torch.randn(3, 8), 0.1)
        >>> probs.shape
        torch.Size([4, 3])
    """
    return F.softmax(queries @ prototypes.T / temperature, dim=1)


def sharpen(probabilities: Tensor, temperature: float) -> Tensor:
    """Sharpens each row: ``p ** (1 / temperature)``, renormalised to sum 1.

    Args:
        probabilities: Tensor of shape (B, K).
        temperature: In (0, 1]; lower gives a more peaked distribution.

    Returns:
        Tensor of shape (B, K); each row sums to 1.

    Example:
        >>> sharpen(torch.tensor([[0.25, 0.75]]), temperature=0.5)
        tensor([[0.1000, 0.9000]])
    """
    powered = probabilities ** (1.0 / temperature)
    return powered / powered.sum(dim=1, keepdim=True)


@torch.no_grad()
def sinkhorn(
    probabilities: Tensor,
    iterations: int = 3,
    gather_distributed: bool = False,
) -> Tensor:
    """Sinkhorn normalisation of target probabilities (MSN, after SwaV).

    Alternately gives every prototype the same total mass (over the global batch when
    ``gather_distributed``) and every sample mass 1.

    Args:
        probabilities: Tensor of shape (B, K).
        iterations: Number of iterations; 0 or less returns ``probabilities`` unchanged.
        gather_distributed: If True and distributed, the prototype masses are summed over
            all processes, so the result equals one process on the global batch.

    Returns:
        Tensor of shape (B, K); each row sums to 1 when ``iterations > 0``.

    Example:
        >>> out = sinkhorn(torch.softmax(torch.randn(6, 3), dim=1))
        >>> torch.allclose(out.sum(dim=1), torch.ones(6))
        True
    """
    if iterations <= 0:
        return probabilities
    distributed = gather_distributed and dist.is_distributed()
    total = probabilities.sum()
    # `out` is a fresh tensor: divide it in place (faster than a new (B, K) tensor a step).
    out = probabilities / (dist.all_reduce_sum(total) if distributed else total)
    for _ in range(iterations):
        prototype_mass = out.sum(dim=0, keepdim=True)
        if distributed:
            prototype_mass = dist.all_reduce_sum(prototype_mass)
        out.div_(prototype_mass)
        out.div_(out.sum(dim=1, keepdim=True))
    return out


class MSNLoss(nn.Module):
    """Loss of Masked Siamese Networks (Assran et al. 2022).

    Anchors (masked views) and targets are L2-normalised and turned into probabilities over
    the prototypes; the target probabilities are sharpened, Sinkhorn-normalised and not
    differentiated. The loss is the cross-entropy
    ``mean_a -sum_k p_target[a mod B, k] log p_anchor[a, k]`` plus
    ``regularization_weight * regularization_loss(mean_a p_anchor[a])``, the mean-entropy
    maximisation term ``KL(mean p_anchor || uniform)``.

    Attributes:
        temperature: Temperature of the prototype similarities.
        sinkhorn_iterations: Sinkhorn iterations on the targets (0 disables).
        regularization_weight: Weight of the regularizer (0 disables).
        gather_distributed: If True, Sinkhorn and the regularizer use the global batch.

    Example:
        >>> loss_fn = MSNLoss()
        >>> anchors = torch.randn(2 * 4, 16)  # 2 anchor views of a batch of 4, view-major
        >>> targets = torch.randn(4, 16)
        >>> prototypes = torch.randn(10, 16)
        >>> loss = loss_fn(anchors, targets, prototypes)
        >>> loss.shape
        torch.Size([])
    """

    def __init__(
        self,
        temperature: float = 0.1,
        sinkhorn_iterations: int = 3,
        regularization_weight: float = 1.0,
        gather_distributed: bool = False,
    ) -> None:
        """Stores the hyper-parameters.

        Args:
            temperature: Temperature of the prototype similarities, in (0, inf).
            sinkhorn_iterations: Sinkhorn iterations on the targets, >= 0.
            regularization_weight: Weight of the regularizer, >= 0.
            gather_distributed: If True, Sinkhorn and the regularizer use all processes.

        Raises:
            ValueError: On a value out of range, or ``gather_distributed=True`` without
                ``torch.distributed``.
        """
        super().__init__()
        name = type(self).__name__
        if not temperature > 0:
            raise ValueError(
                f"{name} 'temperature' must be in (0, inf), got temperature={temperature!r}."
            )
        if sinkhorn_iterations < 0:
            raise ValueError(
                f"{name} 'sinkhorn_iterations' must be >= 0, got "
                f"sinkhorn_iterations={sinkhorn_iterations!r}."
            )
        if not regularization_weight >= 0:
            raise ValueError(
                f"{name} 'regularization_weight' must be >= 0, got "
                f"regularization_weight={regularization_weight!r}."
            )
        if gather_distributed and not torch_dist.is_available():
            raise ValueError(
                f"{name} 'gather_distributed' is True but torch.distributed is not available; "
                "set gather_distributed=False or install a torch build with distributed support."
            )
        self.temperature = temperature
        self.sinkhorn_iterations = sinkhorn_iterations
        self.regularization_weight = regularization_weight
        self.gather_distributed = gather_distributed

    def forward(
        self,
        anchors: Tensor,
        targets: Tensor,
        prototypes: Tensor,
        target_sharpen_temperature: float = 0.25,
    ) -> Tensor:
        """Computes the loss.

        Args:
            anchors: Tensor of shape (V * B, D): V anchor views of the batch, view-major
                (row ``v * B + b`` is view ``v`` of sample ``b``).
            targets: Tensor of shape (B, D).
            prototypes: Tensor of shape (K, D).
            target_sharpen_temperature: Sharpening temperature of the target probabilities.

        Returns:
            Scalar: the mean loss over the anchors.

        Raises:
            ValueError: If the anchor count is not a positive multiple of the target count.
        """
        batch_size = targets.shape[0]
        if batch_size == 0 or anchors.shape[0] % batch_size != 0 or anchors.shape[0] == 0:
            raise ValueError(
                f"{type(self).__name__} expects anchors of shape (V * B, D) for targets of "
                f"shape (B, D), got anchors {tuple(anchors.shape)} and targets "
                f"{tuple(targets.shape)}."
            )
        num_views = anchors.shape[0] // batch_size
        prototypes = F.normalize(prototypes, dim=1)
        anchor_log_probs = F.log_softmax(
            F.normalize(anchors, dim=1) @ prototypes.T / self.temperature, dim=1
        )
        with torch.no_grad():
            target_probs = prototype_probabilities(
                F.normalize(targets, dim=1), prototypes, temperature=self.temperature
            )
            target_probs = sharpen(target_probs, temperature=target_sharpen_temperature)
            target_probs = sinkhorn(
                target_probs,
                iterations=self.sinkhorn_iterations,
                gather_distributed=self.gather_distributed,
            )
        # Broadcasting over the view axis pairs anchor v * B + b with target b.
        num_prototypes = prototypes.shape[0]
        cross_entropy = -torch.sum(
            anchor_log_probs.reshape(num_views, batch_size, num_prototypes) * target_probs
        )
        loss = cross_entropy / anchors.shape[0]

        if self.regularization_weight > 0:
            mean_anchor_probs = anchor_log_probs.exp().mean(dim=0)
            if self.gather_distributed:
                # Mean of the per-process means (equal batch sizes): the global mean. The
                # gather's backward sends each process the gradient of every copy of it.
                mean_anchor_probs = dist.gather_cat(mean_anchor_probs.unsqueeze(0)).mean(dim=0)
            loss = loss + self.regularization_weight * self.regularization_loss(
                mean_anchor_probs=mean_anchor_probs
            )
        return loss

    def regularization_loss(self, mean_anchor_probs: Tensor) -> Tensor:
        """Mean-entropy maximisation term: ``sum_k p_k log p_k + log K = KL(p || uniform)``.

        Args:
            mean_anchor_probs: Tensor of shape (K,), the mean anchor probabilities.

        Returns:
            Scalar, 0 for the uniform distribution.
        """
        # xlogy gives 0 * log 0 = 0 for a prototype no anchor uses.
        entropy_term = torch.sum(torch.xlogy(mean_anchor_probs, mean_anchor_probs))
        return entropy_term + math.log(float(mean_anchor_probs.shape[0]))
