"""Loss functions for self-supervised learning, with LightlySSL 1.6's names and arguments.

One file per loss; the pure functions behind each class (e.g. ``ntxent_loss``,
``vicreg_loss``) live in the same files and can be tested and reused alone.
"""

from fastssl.loss.barlow_twins_loss import BarlowTwinsLoss
from fastssl.loss.capi_loss import CAPILoss
from fastssl.loss.dcl_loss import DCLLoss, DCLWLoss
from fastssl.loss.dense_relational_utils import roi_resample_to_grid
from fastssl.loss.detcon_loss import DetConBLoss, DetConSLoss
from fastssl.loss.dino_loss import DINOLoss
from fastssl.loss.directclr_loss import DirectCLRLoss
from fastssl.loss.emp_ssl_loss import EMPSSLLoss
from fastssl.loss.frossl_loss import FroSSLLoss
from fastssl.loss.ibot_loss import IBOTPatchLoss, IBOTPlusPlusPatchLoss
from fastssl.loss.koleo_loss import KoLeoLoss
from fastssl.loss.lejepa_loss import LeJEPALoss, SIGReg
from fastssl.loss.lewm_loss import LeWMLoss
from fastssl.loss.macl_loss import MACLLoss
from fastssl.loss.memory_bank import MemoryBankModule
from fastssl.loss.mmcr_loss import MMCRLoss
from fastssl.loss.msn_loss import MSNLoss
from fastssl.loss.negative_cosine_similarity import NegativeCosineSimilarity
from fastssl.loss.ntx_ent_loss import NTXentLoss
from fastssl.loss.patch_kernel_alignment_loss import PatchKernelAlignmentLoss
from fastssl.loss.pmsn_loss import PMSNCustomLoss, PMSNLoss
from fastssl.loss.reconstruction_loss import MaskedReconstructionLoss
from fastssl.loss.swav_loss import SwaVLoss
from fastssl.loss.tico_loss import TiCoLoss
from fastssl.loss.vicreg_loss import VICRegLoss
from fastssl.loss.vicregl_loss import VICRegLLoss
from fastssl.loss.visreg_loss import VISRegLoss, VISRegLossComponents
from fastssl.loss.wmse_loss import Whitening2d, WMSELoss

__all__ = [
    "BarlowTwinsLoss",
    "CAPILoss",
    "DCLLoss",
    "DCLWLoss",
    "DINOLoss",
    "DetConBLoss",
    "DetConSLoss",
    "DirectCLRLoss",
    "EMPSSLLoss",
    "FroSSLLoss",
    "IBOTPatchLoss",
    "IBOTPlusPlusPatchLoss",
    "KoLeoLoss",
    "LeJEPALoss",
    "LeWMLoss",
    "MACLLoss",
    "MMCRLoss",
    "MSNLoss",
    "MaskedReconstructionLoss",
    "MemoryBankModule",
    "NTXentLoss",
    "NegativeCosineSimilarity",
    "PMSNCustomLoss",
    "PMSNLoss",
    "PatchKernelAlignmentLoss",
    "SIGReg",
    "SwaVLoss",
    "TiCoLoss",
    "VICRegLLoss",
    "VICRegLoss",
    "VISRegLoss",
    "VISRegLossComponents",
    "WMSELoss",
    "Whitening2d",
    "roi_resample_to_grid",
]
