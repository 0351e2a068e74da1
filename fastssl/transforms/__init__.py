"""Multi-view transforms for self-supervised learning, with lightly 1.6's names and arguments.

Every view is described by a ``ViewSpec`` (the single source of augmentation parameters),
compiled here into a ``torchvision.transforms.v2`` pipeline that works on uint8 tensors until
the final float conversion; ``transform.view_specs`` hands the same specs to other engines.
"""

from fastssl.transforms.aim_transform import AIMTransform
from fastssl.transforms.byol_transform import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
)
from fastssl.transforms.densecl_transform import DenseCLTransform
from fastssl.transforms.dino_transform import DINOTransform, DINOViewTransform
from fastssl.transforms.gaussian_blur import GaussianBlur
from fastssl.transforms.mae_transform import MAETransform
from fastssl.transforms.moco_transform import MoCoV1Transform, MoCoV2Transform
from fastssl.transforms.msn_transform import MSNTransform, MSNViewTransform
from fastssl.transforms.multi_crop_transform import MultiCropTranform
from fastssl.transforms.multi_view_transform import MultiViewTransform, ViewTransform
from fastssl.transforms.rotation import (
    RandomRotate,
    RandomRotateDegrees,
    random_rotation_transform,
)
from fastssl.transforms.simclr_transform import SimCLRTransform, SimCLRViewTransform
from fastssl.transforms.simsiam_transform import SimSiamTransform, SimSiamViewTransform
from fastssl.transforms.solarize import RandomSolarization
from fastssl.transforms.swav_transform import SwaVTransform, SwaVViewTransform
from fastssl.transforms.tico_transform import (
    TiCoTransform,
    TiCoView1Transform,
    TiCoView2Transform,
)
from fastssl.transforms.utils import IMAGENET_NORMALIZE
from fastssl.transforms.vicreg_transform import VICRegTransform, VICRegViewTransform
from fastssl.transforms.view_spec import ViewSpec

__all__ = [
    "IMAGENET_NORMALIZE",
    "AIMTransform",
    "BYOLTransform",
    "BYOLView1Transform",
    "BYOLView2Transform",
    "DINOTransform",
    "DINOViewTransform",
    "DenseCLTransform",
    "GaussianBlur",
    "MAETransform",
    "MSNTransform",
    "MSNViewTransform",
    "MoCoV1Transform",
    "MoCoV2Transform",
    "MultiCropTranform",
    "MultiViewTransform",
    "RandomRotate",
    "RandomRotateDegrees",
    "RandomSolarization",
    "SimCLRTransform",
    "SimCLRViewTransform",
    "SimSiamTransform",
    "SimSiamViewTransform",
    "SwaVTransform",
    "SwaVViewTransform",
    "TiCoTransform",
    "TiCoView1Transform",
    "TiCoView2Transform",
    "VICRegTransform",
    "VICRegViewTransform",
    "ViewSpec",
    "ViewTransform",
    "random_rotation_transform",
]
