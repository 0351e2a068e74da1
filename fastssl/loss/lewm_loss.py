"""LeWM loss for latent world models, with LightlySSL 1.6's interface.

- LeWM: LeWorldModel, 2026, https://arxiv.org/abs/2603.19312

A world model predicts the embedding of the next frame from the current one (and an
action). LeWM trains encoder and predictor end to end with the squared prediction error
plus SIGReg (:class:`fastssl.loss.lejepa_loss.SIGReg`) on the frame embeddings; SIGReg
alone prevents collapse, so no teacher, EMA or stop-gradient on the encoder is needed.
"""

from __future__ import annotations

from torch import Tensor, nn

from fastssl.loss.latent_distance import latent_distance
from fastssl.loss.lejepa_loss import SIGReg


def latent_prediction_loss(*, predicted: Tensor, target: Tensor, normalize: bool = False) -> Tensor:
    """Mean squared error between predicted and target embeddings; the target is detached.

    :func:`fastssl.loss.latent_distance.latent_distance` with ``distance="l2"``.

    Args:
        predicted: Predicted embeddings of shape (B, T, D).
        target: Target embeddings, same shape as ``predicted``.
        normalize: Layer-normalise both over the last dimension first.

    Returns:
        Scalar loss.

    Example:
        >>> import torch
        >>> latent_prediction_loss(predicted=torch.ones(1, 2, 3), target=torch.zeros(1, 2, 3))
        tensor(1.)
    """
    return latent_distance(predicted=predicted, target=target, distance="l2", normalize=normalize)


class LeWMLoss(nn.Module):
    """LeWM loss: ``prediction + lambda_param * SIGReg(embeddings)`` (LeWorldModel, 2026,
    https://arxiv.org/abs/2603.19312).

    ``prediction`` is :func:`latent_prediction_loss` of the predicted next-frame embeddings
    against the observed ones. SIGReg treats the batch as the sample: the embeddings
    (B, T, D) are regularised per time step over the batch, i.e. SIGReg gets them as
    (T, B, D). (Passing (B, T, D) unchanged would silently test the distribution over time
    instead.)

    Shapes: ``predicted`` and ``target`` (B, T', D), ``embeddings`` (B, T, D); returns a
    scalar. With ``gather_distributed`` SIGReg uses the global batch.

    Attributes:
        lambda_param: Weight of SIGReg (0.1 in the paper, its only tuned hyperparameter).
        normalize: Whether the prediction loss layer-normalises its inputs.
        sigreg: The :class:`SIGReg` module.

    Example:
        >>> import torch
        >>> criterion = LeWMLoss(sigreg_num_vectors=64)
        >>> emb = torch.randn(8, 5, 16)  # (B, T, D) frame embeddings
        >>> predicted = emb[:, :-1] + 0.1  # a predictor's guess of frames 1..T-1
        >>> loss = criterion(predicted=predicted, target=emb[:, 1:], embeddings=emb)
    """

    def __init__(
        self,
        lambda_param: float = 0.1,
        normalize: bool = False,
        gather_distributed: bool = False,
        sigreg_knots: int = 17,
        sigreg_t_max: float = 3.0,
        sigreg_num_vectors: int = 1024,
    ) -> None:
        """Builds the loss.

        Args:
            lambda_param: Weight of SIGReg, >= 0.
            normalize: Layer-normalise the embeddings inside the prediction loss.
            gather_distributed: Compute SIGReg over the batches of all processes.
            sigreg_knots: ``knots`` of :class:`SIGReg`.
            sigreg_t_max: ``t_max`` of :class:`SIGReg`.
            sigreg_num_vectors: ``num_vectors`` of :class:`SIGReg`.

        Raises:
            ValueError: If ``lambda_param < 0`` or a SIGReg argument is out of range.
        """
        super().__init__()
        if lambda_param < 0.0:
            raise ValueError(
                f"LeWMLoss 'lambda_param' must not be negative, got lambda_param={lambda_param}."
            )
        self.lambda_param = lambda_param
        self.normalize = normalize
        self.sigreg = SIGReg(
            knots=sigreg_knots,
            t_max=sigreg_t_max,
            num_vectors=sigreg_num_vectors,
            gather_distributed=gather_distributed,
        )

    def forward(self, *, predicted: Tensor, target: Tensor, embeddings: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            predicted: Predicted next-frame embeddings, shape (B, T', D).
            target: Observed next-frame embeddings, same shape as ``predicted``.
            embeddings: All frame embeddings of the clips, shape (B, T, D), batch first.

        Returns:
            Scalar loss.

        Raises:
            ValueError: If ``embeddings`` is not 3-D or differs from ``predicted`` in batch
                size or dimension, or ``predicted`` and ``target`` differ in shape.
        """
        if embeddings.dim() != 3:
            raise ValueError(
                f"embeddings must have shape (B, T, D), got {tuple(embeddings.shape)}."
            )
        if (embeddings.shape[0], embeddings.shape[-1]) != (predicted.shape[0], predicted.shape[-1]):
            raise ValueError(
                "embeddings must have the batch size and dimension of predicted, got "
                f"{tuple(embeddings.shape)} and {tuple(predicted.shape)}."
            )
        prediction = latent_prediction_loss(
            predicted=predicted, target=target, normalize=self.normalize
        )
        regularization = self.sigreg(embeddings.transpose(0, 1))  # (T, B, D)
        return prediction + self.lambda_param * regularization
