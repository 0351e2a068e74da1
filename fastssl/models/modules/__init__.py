"""Reusable modules: heads, memory banks and masked vision transformers.

Mirrors ``lightly.models.modules``. Nothing here imports timm at import time: the timm
based classes raise an ImportError naming ``pip install timm`` when built without it.
"""

from fastssl.models.modules.capi_predictor_timm import CAPIPredictorTIMM
from fastssl.models.modules.heads import (
    AIMPredictionHead,
    BarlowTwinsProjectionHead,
    BYOLPredictionHead,
    BYOLProjectionHead,
    CAPIProjectionHead,
    DenseCLProjectionHead,
    DINOProjectionHead,
    DINOv2ProjectionHead,
    LeJEPAProjectionHead,
    LeWMProjectionHead,
    MMCRProjectionHead,
    MoCoProjectionHead,
    NNCLRPredictionHead,
    NNCLRProjectionHead,
    SimCLRProjectionHead,
    SimSiamPredictionHead,
    SimSiamProjectionHead,
    SMoGPredictionHead,
    SMoGProjectionHead,
    SMoGPrototypes,
    SwaVProjectionHead,
    SwaVPrototypes,
)
from fastssl.models.modules.ijepa_timm import IJEPAPredictorTIMM
from fastssl.models.modules.masked_autoencoder import MAEBackbone, MAEDecoder, MAEEncoder
from fastssl.models.modules.masked_autoencoder_timm import MAEDecoderTIMM, PixioDecoderTIMM
from fastssl.models.modules.masked_causal_vision_transformer import MaskedCausalVisionTransformer
from fastssl.models.modules.masked_vision_transformer_decoder_timm import (
    MaskedVisionTransformerDecoderTIMM,
)
from fastssl.models.modules.masked_vision_transformer_timm import MaskedVisionTransformerTIMM
from fastssl.models.modules.masked_vision_transformer_torchvision import (
    MaskedVisionTransformerTorchvision,
)
from fastssl.models.modules.memory_bank import MemoryBankModule
from fastssl.models.modules.nn_memory_bank import NNMemoryBankModule
from fastssl.models.modules.world_model import (
    ActionEncoder,
    AdaLNZero,
    LatentDynamicsPredictor,
    PredictorBlock,
)

__all__ = [
    "AIMPredictionHead",
    "ActionEncoder",
    "AdaLNZero",
    "BYOLPredictionHead",
    "BYOLProjectionHead",
    "BarlowTwinsProjectionHead",
    "CAPIPredictorTIMM",
    "CAPIProjectionHead",
    "DINOProjectionHead",
    "DINOv2ProjectionHead",
    "DenseCLProjectionHead",
    "IJEPAPredictorTIMM",
    "LatentDynamicsPredictor",
    "LeJEPAProjectionHead",
    "LeWMProjectionHead",
    "MAEBackbone",
    "MAEDecoder",
    "MAEDecoderTIMM",
    "MAEEncoder",
    "MMCRProjectionHead",
    "MaskedCausalVisionTransformer",
    "MaskedVisionTransformerDecoderTIMM",
    "MaskedVisionTransformerTIMM",
    "MaskedVisionTransformerTorchvision",
    "MemoryBankModule",
    "MoCoProjectionHead",
    "NNCLRPredictionHead",
    "NNCLRProjectionHead",
    "NNMemoryBankModule",
    "PixioDecoderTIMM",
    "PredictorBlock",
    "SMoGPredictionHead",
    "SMoGProjectionHead",
    "SMoGPrototypes",
    "SimCLRProjectionHead",
    "SimSiamPredictionHead",
    "SimSiamProjectionHead",
    "SwaVProjectionHead",
    "SwaVPrototypes",
]
