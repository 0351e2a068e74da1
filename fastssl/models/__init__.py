"""Models: reusable modules (``fastssl.models.modules``), utilities
(``fastssl.models.utils``), synchronized and split batch norm (``fastssl.models.batchnorm``)
and small-image ResNets (``fastssl.models.resnet``, ``ResNetGenerator`` exported here)."""

from typing import TYPE_CHECKING, Any

from fastssl.models import utils

if TYPE_CHECKING:
    from fastssl.models.resnet import ResNetGenerator

__all__ = ["ResNetGenerator", "utils"]


def __getattr__(name: str) -> Any:
    # ResNetGenerator needs fastssl.models.batchnorm, which imports pytorch_lightning (~2 s):
    # it is imported on first use so that `import fastssl.models` stays light.
    if name == "ResNetGenerator":
        from fastssl.models.resnet import ResNetGenerator

        return ResNetGenerator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
