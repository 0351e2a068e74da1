"""PMSN loss: MSN with a prior matching regularizer instead of mean-entropy maximisation.

- PMSN: Assran et al. 2023, "The Hidden Uniform Cluster Prior in Self-Supervised Learning",
  https://arxiv.org/abs/2210.07277

MSN's regularizer pushes the mean prototype assignment towards the uniform distribution,
which favours equally sized clusters; PMSN replaces it by the KL divergence to a chosen prior,
by default a power law (long-tailed clusters). Same interface as LightlySSL 1.6's
``lightly.loss.pmsn_loss``; :class:`PMSNCustomLoss` also accepts a fixed prior tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from fastssl.loss.msn_loss import MSNLoss


def _power_law_distribution(size: int, exponent: float, device: torch.device) -> Tensor:
    """Returns the power law ``p_k ∝ k ** -exponent`` for ``k = 1..size``, summing to 1.

    Args:
        size: Number of entries.
        exponent: Power law exponent (0 gives the uniform distribution).
        device: Device of the result.

    Returns:
        Float32 tensor of shape (size,).

    Example:
        >>> _power_law_distribution(2, 1.0, torch.device("cpu"))
        tensor([0.6667, 0.3333])
    """
    k = torch.arange(1, size + 1, dtype=torch.float32, device=device)
    weights = k.pow(-exponent)
    return weights / weights.sum()


def _kl_to_prior(prior: Tensor, mean_anchor_probs: Tensor) -> Tensor:
    """Returns ``sum_k prior_k * (log prior_k - log mean_anchor_probs_k)``, i.e. KL(prior||p).

    This is ``F.kl_div(p.log(), prior, reduction="sum")``, the quantity LightlySSL computes;
    ``xlogy`` makes an entry with prior 0 contribute 0.
    """
    prior = prior.to(device=mean_anchor_probs.device, dtype=mean_anchor_probs.dtype)
    return torch.sum(torch.xlogy(prior, prior) - prior * torch.log(mean_anchor_probs))


class PMSNLoss(MSNLoss):
    """PMSN loss with a power-law prior (Assran et al. 2023).

    The MSN cross-entropy plus ``regularization_weight * KL(prior || mean_a p_anchor[a])``
    where ``prior_k ∝ k ** -power_law_exponent`` for ``k = 1..K``.

    Attributes:
        temperature: Temperature of the prototype similarities.
        sinkhorn_iterations: Sinkhorn iterations on the targets (0 disables).
        regularization_weight: Weight of the regularizer (0 disables).
        power_law_exponent: Exponent of the power-law prior.
        gather_distributed: If True, Sinkhorn and the regularizer use the global batch.

    Example:
        >>> loss_fn = PMSNLoss(power_law_exponent=0.25)
        >>> anchors, targets = torch.randn(8, 16), torch.randn(4, 16)
        >>> loss = loss_fn(anchors, targets, prototypes=torch.randn(10, 16))
        >>> loss.shape
        torch.Size([])
    """

    def __init__(
        self,
        temperature: float = 0.1,
        sinkhorn_iterations: int = 3,
        regularization_weight: float = 1,
        power_law_exponent: float = 0.25,
        gather_distributed: bool = False,
    ) -> None:
        """Stores the hyper-parameters; see :class:`~fastssl.loss.msn_loss.MSNLoss`.

        Args:
            temperature: Temperature of the prototype similarities, in (0, inf).
            sinkhorn_iterations: Sinkhorn iterations on the targets, >= 0.
            regularization_weight: Weight of the regularizer, >= 0.
            power_law_exponent: Exponent of the power-law prior.
            gather_distributed: If True, Sinkhorn and the regularizer use all processes.
        """
        super().__init__(
            temperature=temperature,
            sinkhorn_iterations=sinkhorn_iterations,
            regularization_weight=regularization_weight,
            gather_distributed=gather_distributed,
        )
        self.power_law_exponent = power_law_exponent

    def regularization_loss(self, mean_anchor_probs: Tensor) -> Tensor:
        """KL divergence from the power-law prior to the mean anchor probabilities.

        Args:
            mean_anchor_probs: Tensor of shape (K,).

        Returns:
            Scalar.
        """
        prior = _power_law_distribution(
            size=mean_anchor_probs.shape[0],
            exponent=self.power_law_exponent,
            device=mean_anchor_probs.device,
        )
        return _kl_to_prior(prior, mean_anchor_probs)


class PMSNCustomLoss(MSNLoss):
    """PMSN loss with a user-given prior (Assran et al. 2023).

    The MSN cross-entropy plus ``regularization_weight * KL(prior || mean_a p_anchor[a])``.

    Attributes:
        target_distribution: Either a function mapping the mean anchor probabilities (K,)
            to a prior of shape (K,) summing to 1, or that prior as a tensor.
        temperature: Temperature of the prototype similarities.
        sinkhorn_iterations: Sinkhorn iterations on the targets (0 disables).
        regularization_weight: Weight of the regularizer (0 disables).
        gather_distributed: If True, Sinkhorn and the regularizer use the global batch.

    Example:
        >>> def uniform(mean_anchor_probs: Tensor) -> Tensor:
        ...     k = mean_anchor_probs.shape[0]
        ...     return mean_anchor_probs.new_full((k,), 1.0 / k)
        >>> loss_fn = PMSNCustomLoss(target_distribution=uniform)
        >>> anchors, targets = torch.randn(8, 16), torch.randn(4, 16)
        >>> loss = loss_fn(anchors, targets, prototypes=torch.randn(10, 16))
    """

    def __init__(
        self,
        target_distribution: Callable[[Tensor], Tensor] | Tensor,
        temperature: float = 0.1,
        sinkhorn_iterations: int = 3,
        regularization_weight: float = 1,
        gather_distributed: bool = False,
    ) -> None:
        """Stores the prior and the hyper-parameters.

        Args:
            target_distribution: Function ``(K,) -> (K,)`` or tensor of shape (K,): the
                prior, summing to 1.
            temperature: Temperature of the prototype similarities, in (0, inf).
            sinkhorn_iterations: Sinkhorn iterations on the targets, >= 0.
            regularization_weight: Weight of the regularizer, >= 0.
            gather_distributed: If True, Sinkhorn and the regularizer use all processes.

        Raises:
            TypeError: If ``target_distribution`` is neither callable nor a tensor.
        """
        super().__init__(
            temperature=temperature,
            sinkhorn_iterations=sinkhorn_iterations,
            regularization_weight=regularization_weight,
            gather_distributed=gather_distributed,
        )
        if not (isinstance(target_distribution, Tensor) or callable(target_distribution)):
            raise TypeError(
                "PMSNCustomLoss 'target_distribution' must be a callable (K,) -> (K,) or a "
                f"tensor of shape (K,), got {type(target_distribution).__name__}."
            )
        self.target_distribution = target_distribution

    def regularization_loss(self, mean_anchor_probs: Tensor) -> Tensor:
        """KL divergence from the custom prior to the mean anchor probabilities.

        Args:
            mean_anchor_probs: Tensor of shape (K,).

        Returns:
            Scalar.

        Raises:
            ValueError: If the prior's shape is not (K,).
        """
        target = self.target_distribution
        prior = target if isinstance(target, Tensor) else target(mean_anchor_probs)
        if prior.shape != mean_anchor_probs.shape:
            raise ValueError(
                f"PMSNCustomLoss 'target_distribution' must give a prior of shape "
                f"{tuple(mean_anchor_probs.shape)}, got {tuple(prior.shape)}."
            )
        return _kl_to_prior(prior, mean_anchor_probs)
