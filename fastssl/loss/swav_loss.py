"""SwaV loss: swapped prediction of Sinkhorn cluster codes (Caron et al. 2020).

- SwaV: Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
  Assignments", https://arxiv.org/abs/2006.09882

Same interface as LightlySSL 1.6's ``lightly.loss.swav_loss``, with two differences that do
not change results on inputs LightlySSL handles:

- :func:`sinkhorn` shifts the scores of each prototype by a constant (from its global
  largest score) before the exponential, which the first prototype normalisation cancels
  exactly, so large scores or a small ``epsilon`` no longer overflow to ``inf``/``nan``; it
  runs in float32 for half-precision inputs.
- :class:`SwaVLoss` computes each view's log-softmax once and sums the predictions of all
  views before pairing them with the codes, instead of one cross-entropy per pair of crops.
"""

from __future__ import annotations

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import Tensor, nn

from fastssl.utils import dist

# exp(60) * 1e12 entries still fits in float32 (max ~ exp(88.7)).
_EXP_HEADROOM = 60.0


@torch.no_grad()
def sinkhorn(
    out: Tensor,
    iterations: int = 3,
    epsilon: float = 0.05,
    gather_distributed: bool = False,
) -> Tensor:
    """Soft, equipartitioned assignment of samples to prototypes (Sinkhorn-Knopp).

    Starting from ``exp(out / epsilon)``, alternately rescales every prototype to the same
    total mass and every sample to mass 1, as in SwaV's reference code.

    Args:
        out: Scores of shape (B, K): similarity of B features with K prototypes.
        iterations: Number of Sinkhorn iterations (0: just ``exp`` normalised so that the
            whole matrix sums to the global batch size, as LightlySSL does).
        epsilon: Entropy regularisation; smaller gives harder codes.
        gather_distributed: If True and distributed, the prototype masses are summed over
            all processes, so the codes equal those of one process on the global batch.

    Returns:
        Codes of shape (B, K) (dtype of ``out``); each row sums to 1 when ``iterations > 0``.

    Example:
        >>> codes = sinkhorn(torch.randn(6, 3))
        >>> torch.allclose(codes.sum(dim=1), torch.ones(6))
        True
    """
    distributed = gather_distributed and dist.is_distributed()
    # float32 at least: half precision would overflow exp and lose the small codes.
    scores = out.detach().to(torch.promote_types(out.dtype, torch.float32)) / epsilon
    # Scaling prototype k's scores exp(.) by a constant is undone by the first prototype
    # normalisation; with no iteration only a single global scale is undone (by the total).
    # The largest shifted score is _EXP_HEADROOM, not 0: far below 88 (float32's exp limit)
    # with room for sums of many entries, and far from the denormals that a shift to 0
    # would create for every low score (slow on CPUs).
    if iterations > 0:
        top = scores.amax(dim=0, keepdim=True)
        if distributed:
            top = dist.gather_cat(top).amax(dim=0, keepdim=True)
    else:
        top = scores.amax().reshape(1, 1)
        if distributed:
            top = dist.gather_cat(top).amax().reshape(1, 1)
    # In-place from here: `scores` is a fresh tensor, and in-place division is about twice
    # as fast as allocating a new (B, K) tensor at every step.
    codes = scores.sub_(top - _EXP_HEADROOM).exp_()
    total = codes.sum()
    codes.div_(dist.all_reduce_sum(total) if distributed else total)

    for _ in range(iterations):
        prototype_mass = codes.sum(dim=0, keepdim=True)
        if distributed:
            prototype_mass = dist.all_reduce_sum(prototype_mass)
        codes.div_(prototype_mass)
        codes.div_(codes.sum(dim=1, keepdim=True))
    if iterations <= 0:
        codes.mul_(codes.shape[0] * (dist.world_size() if distributed else 1))
    return codes.to(out.dtype)


def _check(name: str, value: float, minimum: float, strict: bool) -> None:
    if (value <= minimum) if strict else (value < minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"SwaVLoss '{name}' must be {relation} {minimum}, got {name}={value!r}.")


class SwaVLoss(nn.Module):
    """Swapped prediction loss of SwaV (Caron et al. 2020).

    For each high-resolution crop ``i``, Sinkhorn codes ``q_i`` are computed from its scores
    (optionally with a queue of past scores); every other crop ``v`` predicts them with
    ``softmax(z_v / temperature)``. The loss averages the cross-entropies
    ``-mean_b sum_k q_i[b, k] log softmax(z_v / temperature)[b, k]`` over the ``n_crops - 1``
    other crops and then over the high-resolution crops.

    Attributes:
        temperature: Temperature of the predictions.
        sinkhorn_iterations: Number of Sinkhorn iterations.
        sinkhorn_epsilon: Entropy regularisation of Sinkhorn.
        sinkhorn_gather_distributed: If True, Sinkhorn normalises over the global batch.

    Example:
        >>> loss_fn = SwaVLoss()
        >>> high = [torch.randn(4, 10) for _ in range(2)]  # scores (B, K) of 2 global crops
        >>> low = [torch.randn(4, 10) for _ in range(3)]  # scores of 3 local crops
        >>> loss = loss_fn(high, low)
        >>> loss.shape  # LightlySSL returns a one-element tensor
        torch.Size([1])
    """

    def __init__(
        self,
        temperature: float = 0.1,
        sinkhorn_iterations: int = 3,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_gather_distributed: bool = False,
    ) -> None:
        """Stores the hyper-parameters.

        Args:
            temperature: Temperature of the predictions, > 0.
            sinkhorn_iterations: Number of Sinkhorn iterations, >= 0.
            sinkhorn_epsilon: Entropy regularisation of Sinkhorn, > 0.
            sinkhorn_gather_distributed: If True, Sinkhorn normalises over all processes.

        Raises:
            ValueError: On a value out of range, or ``sinkhorn_gather_distributed=True``
                without ``torch.distributed``.
        """
        super().__init__()
        _check("temperature", temperature, 0.0, strict=True)
        _check("sinkhorn_iterations", sinkhorn_iterations, 0, strict=False)
        _check("sinkhorn_epsilon", sinkhorn_epsilon, 0.0, strict=True)
        if sinkhorn_gather_distributed and not torch_dist.is_available():
            raise ValueError(
                "SwaVLoss 'sinkhorn_gather_distributed' is True but torch.distributed is not "
                "available; set sinkhorn_gather_distributed=False or install a torch build "
                "with distributed support."
            )
        self.temperature = temperature
        self.sinkhorn_iterations = sinkhorn_iterations
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_gather_distributed = sinkhorn_gather_distributed

    def subloss(self, z: Tensor, q: Tensor) -> Tensor:
        """Cross-entropy of the codes ``q`` (B, K) under the predictions from scores ``z``.

        Args:
            z: Scores of shape (B, K).
            q: Codes of shape (B, K).

        Returns:
            Scalar: ``-mean_b sum_k q[b, k] * log_softmax(z / temperature)[b, k]``.
        """
        return -torch.mean(torch.sum(q * F.log_softmax(z / self.temperature, dim=1), dim=1))

    def _codes(self, scores: Tensor, queue: Tensor | None) -> Tensor:
        scores = scores.detach()
        if queue is not None:
            scores = torch.cat((scores, queue.detach()))
        codes = sinkhorn(
            scores,
            iterations=self.sinkhorn_iterations,
            epsilon=self.sinkhorn_epsilon,
            gather_distributed=self.sinkhorn_gather_distributed,
        )
        # The queue only shapes the codes of the current batch.
        return codes[: len(codes) - (0 if queue is None else len(queue))]

    def forward(
        self,
        high_resolution_outputs: list[Tensor],
        low_resolution_outputs: list[Tensor],
        queue_outputs: list[Tensor] | None = None,
    ) -> Tensor:
        """Computes the SwaV loss.

        Args:
            high_resolution_outputs: Scores of shape (B, K), one per high-resolution crop;
                codes are computed from these.
            low_resolution_outputs: Scores of shape (B, K), one per low-resolution crop.
            queue_outputs: Optional scores of shape (Q, K) of past batches, one per
                high-resolution crop, used only to compute the codes.

        Returns:
            Tensor of shape (1,): the loss.

        Raises:
            ValueError: If there are fewer than one high-resolution crop or two crops in
                all, or ``queue_outputs`` has the wrong length.
        """
        num_high = len(high_resolution_outputs)
        num_crops = num_high + len(low_resolution_outputs)
        if num_high < 1 or num_crops < 2:
            raise ValueError(
                "SwaVLoss needs at least one high-resolution crop and two crops in all, got "
                f"{num_high} high-resolution and {len(low_resolution_outputs)} "
                "low-resolution crop(s)."
            )
        if queue_outputs is not None and len(queue_outputs) != num_high:
            raise ValueError(
                f"SwaVLoss 'queue_outputs' must hold one tensor per high-resolution crop "
                f"({num_high}), got {len(queue_outputs)}."
            )
        log_probs = [
            F.log_softmax(z / self.temperature, dim=1)
            for z in (*high_resolution_outputs, *low_resolution_outputs)
        ]
        summed_log_probs = torch.stack(log_probs).sum(dim=0)
        loss = high_resolution_outputs[0].new_zeros(1)
        for i, scores in enumerate(high_resolution_outputs):
            codes = self._codes(scores, None if queue_outputs is None else queue_outputs[i])
            # Every crop but crop i predicts the codes of crop i.
            predictions = summed_log_probs - log_probs[i]
            loss = loss - torch.sum(codes * predictions) / codes.shape[0]
        return loss / ((num_crops - 1) * num_high)
