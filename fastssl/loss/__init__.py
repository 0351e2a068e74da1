"""Loss functions for self-supervised learning, with LightlySSL 1.6's names and arguments.

One file per loss; the pure functions behind each class (e.g. ``ntxent_loss``,
``vicreg_loss``) live in the same files and can be tested and reused alone.
"""

from fastssl.loss.barlow_twins_loss import BarlowTwinsLoss
from fastssl.loss.dcl_loss import DCLLoss, DCLWLoss
from fastssl.loss.dino_loss import DINOLoss
from fastssl.loss.memory_bank import MemoryBankModule
from fastssl.loss.msn_loss import MSNLoss
from fastssl.loss.negative_cosine_similarity import NegativeCosineSimilarity
from fastssl.loss.ntx_ent_loss import NTXentLoss
from fastssl.loss.pmsn_loss import PMSNCustomLoss, PMSNLoss
from fastssl.loss.reconstruction_loss import MaskedReconstructionLoss
from fastssl.loss.swav_loss import SwaVLoss
from fastssl.loss.tico_loss import TiCoLoss
from fastssl.loss.vicreg_loss import VICRegLoss

__all__ = [
    "BarlowTwinsLoss",
    "DCLLoss",
    "DCLWLoss",
    "DINOLoss",
    "MSNLoss",
    "MaskedReconstructionLoss",
    "MemoryBankModule",
    "NTXentLoss",
    "NegativeCosineSimilarity",
    "PMSNCustomLoss",
    "PMSNLoss",
    "SwaVLoss",
    "TiCoLoss",
    "VICRegLoss",
]
