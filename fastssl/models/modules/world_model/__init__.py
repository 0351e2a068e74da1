"""Building blocks of latent world models.

A latent world model predicts how an environment evolves in embedding space: from the
embeddings of past frames (and the actions taken) it predicts the embedding of the next
frame, e.g. LeWorldModel (LeWM, https://arxiv.org/abs/2603.19312).

- :class:`ActionEncoder`: actions (B, T, action_dim) -> conditioning embeddings.
- :class:`LatentDynamicsPredictor`: frame embeddings (+ action embeddings) -> next-frame
  embeddings, with :meth:`~LatentDynamicsPredictor.rollout` for multi-step prediction.
- :class:`PredictorBlock`: its transformer block, optionally AdaLN-Zero conditioned.
- :class:`AdaLNZero`: the zero-initialized conditioning projection.

The image encoder is not part of this package: any backbone gives the embeddings.
Experimental, as in LightlySSL 1.6 (same names, arguments and parameter names).
"""

from fastssl.models.modules.world_model.conditioning import ActionEncoder
from fastssl.models.modules.world_model.predictor import (
    AdaLNZero,
    LatentDynamicsPredictor,
    PredictorBlock,
)

__all__ = ["ActionEncoder", "AdaLNZero", "LatentDynamicsPredictor", "PredictorBlock"]
