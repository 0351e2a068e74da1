"""Multi-view transforms for self-supervised learning, with lightly 1.6's names and arguments.

A plain augmentation view is described by a ``ViewSpec`` (the single source of augmentation
parameters), compiled here into a ``torchvision.transforms.v2`` pipeline that works on uint8
tensors until the final float conversion; ``transform.view_specs`` hands the same specs to
the other engines (DALI, FFCV). Views that carry more than an image (VICRegL's grids,
DetCon's masks, PIRL's jigsaw tiles) or work in the frequency domain (FDA) are torchvision
v2 transforms of their own; their ``view_specs`` raises, so they run on the torch engine.
"""

from fastssl.transforms.add_grid_transform import AddGridTransform
from fastssl.transforms.aim_transform import AIMTransform
from fastssl.transforms.amplitude_rescale_transform import AmplitudeRescaleTransform
from fastssl.transforms.byol_transform import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
)
from fastssl.transforms.capi_transform import CAPITransform
from fastssl.transforms.densecl_transform import DenseCLTransform
from fastssl.transforms.detcon_transform import DetConSTransform, DetConSViewTransform
from fastssl.transforms.dino_transform import DINOTransform, DINOViewTransform
from fastssl.transforms.fast_siam_transform import FastSiamTransform
from fastssl.transforms.fda_transform import (
    FDATransform,
    FDAView1Transform,
    FDAView2Transform,
)
from fastssl.transforms.gaussian_blur import GaussianBlur
from fastssl.transforms.gaussian_mixture_masks_transform import GaussianMixtureMask
from fastssl.transforms.ibot_transform import IBOTTransform, IBOTViewTransform
from fastssl.transforms.irfft2d_transform import IRFFT2DTransform
from fastssl.transforms.jigsaw import Jigsaw
from fastssl.transforms.mae_transform import MAETransform
from fastssl.transforms.mmcr_transform import MMCRTransform
from fastssl.transforms.moco_transform import MoCoV1Transform, MoCoV2Transform
from fastssl.transforms.msn_transform import MSNTransform, MSNViewTransform
from fastssl.transforms.multi_crop_transform import MultiCropTranform
from fastssl.transforms.multi_view_transform import MultiViewTransform, ViewTransform
from fastssl.transforms.multi_view_transform_v2 import MultiViewTransformV2
from fastssl.transforms.phase_shift_transform import PhaseShiftTransform
from fastssl.transforms.pirl_transform import PIRLTransform
from fastssl.transforms.random_frequency_mask_transform import RandomFrequencyMaskTransform
from fastssl.transforms.rfft2d_transform import RFFT2DTransform
from fastssl.transforms.rotation import (
    RandomRotate,
    RandomRotateDegrees,
    random_rotation_transform,
)
from fastssl.transforms.simclr_transform import SimCLRTransform, SimCLRViewTransform
from fastssl.transforms.simsiam_transform import SimSiamTransform, SimSiamViewTransform
from fastssl.transforms.smog_transform import SMoGTransform, SmoGViewTransform
from fastssl.transforms.solarize import RandomSolarization
from fastssl.transforms.swav_transform import SwaVTransform, SwaVViewTransform
from fastssl.transforms.tico_transform import (
    TiCoTransform,
    TiCoView1Transform,
    TiCoView2Transform,
)
from fastssl.transforms.torchvision_v2_compatibility import (
    ToTensor,
    functional,
    torchvision_transforms,
)
from fastssl.transforms.utils import IMAGENET_NORMALIZE
from fastssl.transforms.vicreg_transform import VICRegTransform, VICRegViewTransform
from fastssl.transforms.vicregl_transform import VICRegLTransform, VICRegLViewTransform
from fastssl.transforms.view_spec import ViewSpec
from fastssl.transforms.wmse_transform import WMSETransform
from fastssl.utils.dependency import torchvision_transforms_v2_available

__all__ = [
    "IMAGENET_NORMALIZE",
    "AIMTransform",
    "AddGridTransform",
    "AmplitudeRescaleTransform",
    "BYOLTransform",
    "BYOLView1Transform",
    "BYOLView2Transform",
    "CAPITransform",
    "DINOTransform",
    "DINOViewTransform",
    "DenseCLTransform",
    "DetConSTransform",
    "DetConSViewTransform",
    "FDATransform",
    "FDAView1Transform",
    "FDAView2Transform",
    "FastSiamTransform",
    "GaussianBlur",
    "GaussianMixtureMask",
    "IBOTTransform",
    "IBOTViewTransform",
    "IRFFT2DTransform",
    "Jigsaw",
    "MAETransform",
    "MMCRTransform",
    "MSNTransform",
    "MSNViewTransform",
    "MoCoV1Transform",
    "MoCoV2Transform",
    "MultiCropTranform",
    "MultiViewTransform",
    "MultiViewTransformV2",
    "PIRLTransform",
    "PhaseShiftTransform",
    "RFFT2DTransform",
    "RandomFrequencyMaskTransform",
    "RandomRotate",
    "RandomRotateDegrees",
    "RandomSolarization",
    "SMoGTransform",
    "SimCLRTransform",
    "SimCLRViewTransform",
    "SimSiamTransform",
    "SimSiamViewTransform",
    "SmoGViewTransform",
    "SwaVTransform",
    "SwaVViewTransform",
    "TiCoTransform",
    "TiCoView1Transform",
    "TiCoView2Transform",
    "ToTensor",
    "VICRegLTransform",
    "VICRegLViewTransform",
    "VICRegTransform",
    "VICRegViewTransform",
    "ViewSpec",
    "ViewTransform",
    "WMSETransform",
    "functional",
    "random_rotation_transform",
    "torchvision_transforms",
    "torchvision_transforms_v2_available",
]
