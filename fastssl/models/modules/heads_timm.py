"""Prediction head of AIM at LightlySSL's ``lightly.models.modules.heads_timm`` path.

AIM (El-Nouby et al. 2024, "Scalable Pre-training of Large Autoregressive Image Models",
https://arxiv.org/abs/2401.08541) predicts the pixels of the next patch with a stack of
residual MLP blocks built from timm's ``Mlp``. The classes live in
:mod:`fastssl.models.modules.heads.masked` (one implementation); this module re-exports
them so that ``from fastssl.models.modules.heads_timm import AIMPredictionHead`` works.
timm is imported when a head is built, not when this module is imported.

Example:
    >>> import torch
    >>> head = AIMPredictionHead(input_dim=32, output_dim=48, hidden_dim=64, num_blocks=1)
    >>> head(torch.randn(2, 16, 32)).shape
    torch.Size([2, 16, 48])
"""

from __future__ import annotations

from fastssl.models.modules.heads.masked import AIMPredictionHead, AIMPredictionHeadBlock

__all__ = ["AIMPredictionHead", "AIMPredictionHeadBlock"]
