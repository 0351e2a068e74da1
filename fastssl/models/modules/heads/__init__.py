"""Projection and prediction heads, grouped by method family.

Importable exactly like ``lightly.models.modules.heads``::

    from fastssl.models.modules.heads import SimCLRProjectionHead
    from fastssl.models.modules import heads; heads.DINOProjectionHead

- :mod:`.base`: :class:`ProjectionHead` (an MLP built from blocks) and
  :class:`WeightNormLinear`.
- :mod:`.contrastive`: SimCLR, MoCo, DenseCL.
- :mod:`.siamese`: BYOL, SimSiam, NNCLR, TiCo (projection and prediction heads).
- :mod:`.redundancy`: Barlow Twins, VICReg(L), MMCR, LeJEPA, LeWM.
- :mod:`.clustering`: SwAV, DINO, DINOv2, MSN, SMoG, CAPI (prototype heads).
- :mod:`.masked`: AIM (its default MLP needs timm, imported only when a head is built).
"""

from __future__ import annotations

from fastssl.models.modules.heads.base import ProjectionHead, WeightNormLinear
from fastssl.models.modules.heads.clustering import (
    CAPIProjectionHead,
    DINOProjectionHead,
    DINOv2ProjectionHead,
    MSNProjectionHead,
    SMoGPredictionHead,
    SMoGProjectionHead,
    SMoGPrototypes,
    SwaVProjectionHead,
    SwaVPrototypes,
)
from fastssl.models.modules.heads.contrastive import (
    DenseCLProjectionHead,
    MoCoProjectionHead,
    SimCLRProjectionHead,
)
from fastssl.models.modules.heads.masked import AIMPredictionHead, AIMPredictionHeadBlock
from fastssl.models.modules.heads.redundancy import (
    BarlowTwinsProjectionHead,
    LeJEPAProjectionHead,
    LeWMProjectionHead,
    MMCRProjectionHead,
    VicRegLLocalProjectionHead,
    VICRegProjectionHead,
)
from fastssl.models.modules.heads.siamese import (
    BYOLPredictionHead,
    BYOLProjectionHead,
    NNCLRPredictionHead,
    NNCLRProjectionHead,
    SimSiamPredictionHead,
    SimSiamProjectionHead,
    TiCoProjectionHead,
)

__all__ = [
    "AIMPredictionHead",
    "AIMPredictionHeadBlock",
    "BYOLPredictionHead",
    "BYOLProjectionHead",
    "BarlowTwinsProjectionHead",
    "CAPIProjectionHead",
    "DINOProjectionHead",
    "DINOv2ProjectionHead",
    "DenseCLProjectionHead",
    "LeJEPAProjectionHead",
    "LeWMProjectionHead",
    "MMCRProjectionHead",
    "MSNProjectionHead",
    "MoCoProjectionHead",
    "NNCLRPredictionHead",
    "NNCLRProjectionHead",
    "ProjectionHead",
    "SMoGPredictionHead",
    "SMoGProjectionHead",
    "SMoGPrototypes",
    "SimCLRProjectionHead",
    "SimSiamPredictionHead",
    "SimSiamProjectionHead",
    "SwaVProjectionHead",
    "SwaVPrototypes",
    "TiCoProjectionHead",
    "VICRegProjectionHead",
    "VicRegLLocalProjectionHead",
    "WeightNormLinear",
]
